# embed.cmake: writes the bytes of IN as a C array (st_webui_html, NUL-terminated) into OUT.
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){24})" "\\1\n" body "${body}")
file(WRITE ${OUT} "/* generated from server/webui/index.html by embed.cmake: do not edit */\n#include <stddef.h>\n"
  "const unsigned char st_webui_html[] = {\n${body}0x00};\nconst size_t st_webui_html_len = ${len};\n")
