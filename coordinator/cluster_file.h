/* cluster_file: changes to the cluster file (--cluster FILE) while the
 * coordinator runs: a board that paired is put in (pair.c), a node that
 * st-ctl removed is taken out (setup.c), so that the next start sees the
 * same nodes.
 *
 * A node's line is "URL [KEY] [# comment]"; a URL without "tcp://" means
 * tcp:// (as st_coord_node_list reads it). Every other line, comments and
 * blank lines included, is kept as it was. The file is rewritten whole
 * into a temporary file beside it (same mode, fsync'd) and renamed over
 * it, so a crash leaves the old file or the new one, never half of one.
 */
#ifndef ST_CLUSTER_FILE_H
#define ST_CLUSTER_FILE_H

/* Puts "url key # comment" at the end of path in place of every line with
 * the same URL or key (a node that paired again); path is made if missing.
 * 0, or a negative ST_E* code (logged). */
int st_cluster_file_put(const char *path, const char *url, const char *key, const char *comment);

/* Takes every line with url out of path. The number of lines taken out
 * (0: none had it, the file is left untouched), or a negative ST_E* code
 * (logged; the file is then unchanged). */
int st_cluster_file_drop(const char *path, const char *url);

#endif
