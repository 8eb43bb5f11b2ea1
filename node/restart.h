/* restart: st-node re-executes itself when it aborts.
 *
 * libzmq 4.3.4 can abort in its I/O thread because of what a peer sends
 * (issue 12): a ZMTP PING decoded on a connection that libzmq keeps after a
 * reset, while its input was stopped by a full queue, is answered on that
 * broken connection and `!_io_error` fails (src/stream_engine_base.cpp:331).
 * The node's socket has no receive limit, so its queue is never full and
 * that state does not arise (node.c); this is what is left should libzmq
 * abort all the same. The process then executes its own binary again from the
 * SIGABRT handler (execve is async-signal-safe): the same pid, so systemd,
 * scripts and tests keep watching the same process; the same arguments,
 * except that --listen names the address actually bound, so coordinators
 * reconnect where they were; the store on disk is verified again and nothing
 * already stored is sent twice. A process that was itself restarted and
 * aborts again within a second is left to die, so a crash at start-up does
 * not loop.
 */
#ifndef ST_RESTART_H
#define ST_RESTART_H

/* For the start of main: unblocks every signal (an image started from the
 * handler inherits the aborting thread's mask, and libzmq blocks all of them
 * in its threads) and returns how many times this process has restarted
 * (ST_NODE_RESTARTS in the environment; 0 at a normal start). */
int st_restart_count(void);

/* Prepares the re-execution (this binary, argv with --listen endpoint, the
 * environment with the count plus one) and installs the SIGABRT handler.
 * 0, or a negative ST_E* code (logged; an abort then just ends the process). */
int st_restart_arm(int argc, char **argv, const char *endpoint);

#endif
