/* curve: CURVE key files for the ZeroMQ transport (libzmq + libsodium).
 *
 * A key file holds one Z85 key (40 characters, as zmq_curve_keypair gives
 * it) and a newline: NAME.key the secret key (mode 0600), NAME.pub the
 * public key. An allow list holds one Z85 public key per line, then
 * optionally a space and a comment; blank lines and lines whose first word
 * starts with '#' and is not a 40-character key are skipped ('#' is itself a
 * Z85 character, so a key may start with it).
 *
 * Secrets: a secret key is read into a caller buffer and never logged; the
 * functions here log paths and public keys only.
 */
#ifndef ST_CURVE_H
#define ST_CURVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_CURVE_Z85_LEN 40 /* characters of a Z85 key */
#define ST_CURVE_KEY_BYTES 32
#define ST_CURVE_MAX_ALLOW 1024

/* Writes base.key (secret, 0600, refused if it exists) and base.pub. The
 * public key goes to public_z85 (41 bytes) when not NULL. 0, ST_EINVAL when
 * base.key exists (never overwritten), ST_EIO. */
int st_curve_keygen(const char *base, char public_z85[ST_CURVE_Z85_LEN + 1]);

/* Reads a secret key file and derives its public key. Warns when the file is
 * readable by others. 0; ST_EIO when it cannot be read (errno tells why);
 * ST_EFORMAT when it holds no valid Z85 secret key. */
int st_curve_load_secret(const char *path, char secret_z85[ST_CURVE_Z85_LEN + 1],
                         char public_z85[ST_CURVE_Z85_LEN + 1]);

/* True when s (exactly 40 characters before its end) is a Z85 key. */
bool st_curve_valid_z85(const char *s);

/* Reads an allow list into keys (binary, cap entries). Returns the number of
 * keys (>= 1), or ST_EIO (unreadable) / ST_EFORMAT (a bad line, named in the log) /
 * ST_ERANGE (more than cap) / ST_EIO. An empty list is ST_EFORMAT: a node
 * that accepts nobody is a mistake. */
int st_curve_load_allow(const char *path, uint8_t (*keys)[ST_CURVE_KEY_BYTES], int cap);

#endif
