/* file: the one whole-file reader (prompt files, vocabularies, test logs). */
#ifndef ST_FILE_H
#define ST_FILE_H

#include <stddef.h>

/* Reads the whole file at path into a malloc'd buffer with a '\0' after its
 * last byte (the caller frees it); *len (may be NULL) gets the byte count.
 * max > 0 refuses longer files. Returns NULL with errno set when the file
 * cannot be opened or read (errno from the system), is longer than max (EFBIG)
 * or memory runs out (ENOMEM). Logs nothing: the caller says what the file was. */
char *st_file_read(const char *path, size_t max, size_t *len);

#endif
