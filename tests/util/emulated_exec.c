/* emulated_exec: lets a cross-built test start other programs of its own
 * architecture while it runs under qemu-user (scripts/test aarch64).
 *
 * qemu-user emulates one process; when that process calls execve, the host
 * kernel runs the new program, and without binfmt_misc (which CI machines and
 * containers do not have, and which we must not install system-wide) the
 * kernel cannot run an aarch64 program: ENOEXEC. Criterion starts every test
 * in a worker that re-executes the test binary (BoxFort), so not one test
 * would run.
 *
 * This file defines execve (and execv, execl, which the tests call and which
 * in glibc would not go through an execve we could replace) in the test
 * executable itself. The executable comes first in symbol lookup, so
 * libcriterion's calls and ours bind here.
 * When ST_TEST_EMULATOR gives the emulator's absolute path (tests/CMakeLists.txt
 * sets it in the tests' environment, with QEMU_LD_PREFIX) and the file to run
 * is an ELF for the machine this test was built for (an aarch64 test or
 * program), it runs `$ST_TEST_EMULATOR -0 argv[0] path args...` instead;
 * anything else (the real host's /bin/sh, timeout...) is executed as is. The
 * environment, with QEMU_LD_PREFIX and QEMU_CPU, passes on to the child.
 *
 * Only linked into cross builds that have an emulator; a native build and a
 * cross build run on a real Pi call the libc execve as usual.
 */
#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__aarch64__)
#define ST_OWN_MACHINE EM_AARCH64
#elif defined(__x86_64__)
#define ST_OWN_MACHINE EM_X86_64
#else
#error "add this architecture's EM_ value"
#endif

/* The e_machine of an ELF file, 0 when path is not one (a script, missing...). */
static int s_elf_machine(const char *path) {
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    unsigned char h[20]; /* e_ident[16], e_type, e_machine: little-endian on both our targets */
    const ssize_t n = read(fd, h, sizeof h);
    close(fd);
    if (n != (ssize_t)sizeof h || memcmp(h, ELFMAG, SELFMAG) != 0) return 0;
    return h[18] | h[19] << 8;
}

/* replaces the libc one (declared in unistd.h) */
int execve(const char *path, char *const argv[], char *const envp[]) {
    const char *emu = getenv("ST_TEST_EMULATOR");
    if (!emu || *emu != '/' || s_elf_machine(path) != ST_OWN_MACHINE) return (int)syscall(SYS_execve, path, argv, envp);
    int argc = 0;
    while (argv[argc]) argc++;
    char **args = malloc((size_t)(argc + 5) * sizeof *args); /* emu -0 argv0 path args... NULL */
    if (!args) {
        errno = ENOMEM;
        return -1;
    }
    int k = 0;
    args[k++] = (char *)emu;
    args[k++] = "-0";
    args[k++] = argc > 0 ? argv[0] : (char *)path; /* the emulated program's argv[0] */
    args[k++] = (char *)path;
    for (int i = 1; i < argc; i++) args[k++] = argv[i];
    args[k] = NULL;
    const int rc = (int)syscall(SYS_execve, emu, args, envp);
    const int err = errno;
    free(args);
    errno = err;
    return rc;
}

int execv(const char *path, char *const argv[]) { return execve(path, argv, environ); }

int execl(const char *path, const char *arg, ...) {
    char *argv[64];
    int argc = 0;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a; a = va_arg(ap, const char *)) {
        if (argc == 63) {
            va_end(ap);
            errno = E2BIG;
            return -1;
        }
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    argv[argc] = NULL;
    return execve(path, argv, environ);
}
