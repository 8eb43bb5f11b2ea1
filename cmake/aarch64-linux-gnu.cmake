# Cross build for 64-bit Arm Linux (Raspberry Pi 4 and 5) on a Debian host:
#   cmake -S . -B build/aarch64 -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
# Needs what scripts/setup installs: gcc-aarch64-linux-gnu, qemu-user, the
# :arm64 -dev packages (Debian multiarch: /usr/lib/aarch64-linux-gnu) and an
# overlay with Criterion, whose arm64 package cannot be installed beside the
# host's (ST_CROSS_SYSROOT, default ~/.cache/st-cross/sysroot).
# Programs that run during the build (protoc-c) are the host's. ctest runs
# the tests through qemu-aarch64 (CMAKE_CROSSCOMPILING_EMULATOR); tests that
# start our other programs get the same prefix (tests/util/testutil.h).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)

if(NOT ST_CROSS_SYSROOT)
  if(DEFINED ENV{ST_CROSS_SYSROOT})
    set(ST_CROSS_SYSROOT $ENV{ST_CROSS_SYSROOT})
  else()
    set(ST_CROSS_SYSROOT $ENV{HOME}/.cache/st-cross/sysroot)
  endif()
endif()
set(ST_CROSS_SYSROOT ${ST_CROSS_SYSROOT} CACHE PATH "overlay with the aarch64 packages apt cannot co-install (scripts/setup)")

# headers and libraries: the cross libc, the multiarch :arm64 packages, the overlay
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu ${ST_CROSS_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER) # protoc-c, sh...: the host's
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config sees only arm64 .pc files, never the host's x86-64 ones
set(ENV{PKG_CONFIG_LIBDIR}
    /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig:${ST_CROSS_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "")

# Runs aarch64 programs on the host. -L: qemu looks for every file the program
# opens under the overlay first, then at its real path; so the dynamic loader
# finds libcriterion.so.3 in the overlay and everything else (libc6:arm64...)
# where multiarch put it. QEMU_CPU picks the emulated core (default "max",
# with the dot-product extension; cortex-a72 is a Pi 4).
find_program(ST_QEMU_AARCH64 qemu-aarch64)
if(ST_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${ST_QEMU_AARCH64};-L;${ST_CROSS_SYSROOT}")
endif()
