/* file: the one whole-file reader (prompt files, vocabularies, test logs),
 * and the one rewriter of small line files (the cluster file, allow files). */
#ifndef ST_FILE_H
#define ST_FILE_H

#include <stdbool.h>
#include <stddef.h>

/* Reads the whole file at path into a malloc'd buffer with a '\0' after its
 * last byte (the caller frees it); *len (may be NULL) gets the byte count.
 * max > 0 refuses longer files. Returns NULL with errno set when the file
 * cannot be opened or read (errno from the system), is longer than max (EFBIG)
 * or memory runs out (ENOMEM). Logs nothing: the caller says what the file was. */
char *st_file_read(const char *path, size_t max, size_t *len);

/* Rewrites the text file at path in one step: its lines (of any length) but
 * those drop(line, arg) names (drop NULL: none), then add (whole lines, or
 * NULL), go to a temporary file beside it (the file's mode; 0644 for a new
 * one), which is synced and renamed over it: a crash leaves the old file or
 * the new one. A missing file counts as empty when add is given. *dropped
 * (may be NULL) gets the number of lines dropped; with none dropped and
 * nothing added the file is left as it is. 0, or -1 with errno set. Logs
 * nothing: the caller says what the file was. */
int st_file_rewrite_lines(const char *path, bool (*drop)(const char *line, void *arg), void *arg, const char *add,
                          int *dropped);

#endif
