#!/usr/bin/env bash
# st-chat in a real terminal (tmux): connect to st-run --http on loopback,
# chat (streamed answer and its stats line), /stats, /system, /reset, line
# history (Up recalls the last command), /quit; and a clear message when the
# server is unreachable. Every wait polls the screen with a deadline.
#   usage: test_chat_tmux.sh BUILD_DIR     (exit 77 = skipped: no tmux)
set -uo pipefail
BUILD=${1:?build dir}
command -v tmux >/dev/null || { echo "skip: tmux not installed"; exit 77; }
[ -x "$BUILD/st-chat" ] || { echo "skip: st-chat not built (libcurl/libedit missing)"; exit 77; }
MODEL=$("$(dirname "$0")/util/tiny-model" "$BUILD") || exit 1
TMP=$(mktemp -d /tmp/st-chat-tmux.XXXXXX)
# A tmux server of our own: killing the default server's last session makes
# it exit, and a new-session racing that exit fails ("server exited
# unexpectedly"), as it did in CI. Ours lives until cleanup.
tmux() { command tmux -S "$TMP/tmux.sock" "$@"; }
SESSION=st-chat-test-1
SPID=""
cleanup() {
  tmux kill-server 2>/dev/null
  [ -n "$SPID" ] && kill -TERM "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- screen:"; tmux capture-pane -p -t "$SESSION" 2>/dev/null; exit 1; }

# unreachable: a clear message, exit 1
"$BUILD/st-chat" --url http://127.0.0.1:1 > "$TMP/u.out" 2> "$TMP/u.err" < /dev/null
[ $? -eq 1 ] || fail "st-chat against a closed port should exit 1"
grep -q "cannot reach the coordinator at http://127.0.0.1:1" "$TMP/u.err" || fail "no clear message: $(cat "$TMP/u.err")"

"$BUILD/st-run" -m "$MODEL" --http 127.0.0.1:0 -t 1 > "$TMP/srv.out" 2> "$TMP/srv.err" &
SPID=$!
URL=""
for _ in $(seq 400); do
  URL=$(sed -n 's|^serving on \(http://[^ ]*\)/$|\1|p' "$TMP/srv.out")
  [ -n "$URL" ] && break
  kill -0 $SPID 2>/dev/null || fail "st-run --http exited: $(cat "$TMP/srv.err")"
  sleep 0.05
done
[ -n "$URL" ] || fail "st-run --http did not serve within 20 s"

# waits (30 s: a loaded machine) until the screen shows $1 at least ${2:-1} times
wait_for() {
  local want=$1 n=${2:-1}
  for _ in $(seq 600); do
    [ "$(tmux capture-pane -p -S -200 -t "$SESSION" | grep -cF -- "$want")" -ge "$n" ] && return 0
    sleep 0.05
  done
  fail "'$want' (x$n) did not appear"
}

tmux new-session -d -s "$SESSION" -x 160 -y 50 "$BUILD/st-chat --url $URL --temp 0 --max-tokens 8; sleep 30" ||
  fail "tmux new-session"
wait_for "st-chat: connected to $URL"
tmux send-keys -t "$SESSION" "Hello there" Enter
wait_for "[8 tokens"
tmux send-keys -t "$SESSION" "/stats" Enter
wait_for "this session: 1 turns, 8 tokens"
wait_for "server: ok (single)"
tmux send-keys -t "$SESSION" "/system Answer briefly." Enter
wait_for "(system message set)"
tmux send-keys -t "$SESSION" "/reset" Enter
wait_for "(conversation cleared)"
tmux send-keys -t "$SESSION" Up Enter          # history: the last line again
wait_for "(conversation cleared)" 2
tmux send-keys -t "$SESSION" "/quit" Enter
cmd=""
for _ in $(seq 200); do  # st-chat gone: the pane runs the `sleep` after it
  cmd=$(tmux display-message -p -t "$SESSION" '#{pane_current_command}')
  [ "$cmd" = sleep ] && break
  sleep 0.05
done
[ "$cmd" = sleep ] || fail "st-chat did not quit (pane runs $cmd)"

# Ctrl-C while the answer streams stops it and keeps the conversation (the
# server's prompt cache then serves the stopped answer to the next turn);
# Ctrl-C at the prompt asks for a second one, which leaves.
metric() { curl -s "$URL/metrics" | sed -n "s/^$1 //p"; }
# waits (60 s) until the answer to "> $1" shows text on the screen (a few
# tokens generated on the server are not yet a streamed chunk here)
wait_answer() {
  for _ in $(seq 1200); do
    tmux capture-pane -p -S -200 -t "$SESSION" |
      awk -v p="> $1" '$0 == p { after = 1; found = 0; next } after && length($0) { found = 1 } END { exit !found }' &&
      return 0
    sleep 0.05
  done
  fail "no answer text to '$1' within 60 s"
}
# the new session starts before the old one goes, so the server never empties
tmux new-session -d -s st-chat-test-2 -x 160 -y 50 "$BUILD/st-chat --url $URL --temp 0 --max-tokens 3000; sleep 30" ||
  fail "tmux new-session"
tmux kill-session -t "$SESSION" 2>/dev/null
SESSION=st-chat-test-2
wait_for "st-chat: connected to $URL"
tmux send-keys -t "$SESSION" "Tell me a very long story" Enter
wait_answer "Tell me a very long story"  # streaming, far from the 3000 tokens
tmux send-keys -t "$SESSION" C-c
wait_for "the answer so far stays in the conversation"
for _ in $(seq 600); do  # the server saw the client go and cancelled the sequence
  [ "$(curl -s "$URL/metrics" | sed -n 's/^st_requests_total{outcome="cancelled"} //p')" = 1 ] && break
  sleep 0.05
done
[ "$(curl -s "$URL/metrics" | sed -n 's/^st_requests_total{outcome="cancelled"} //p')" = 1 ] ||
  fail "the server did not cancel the stopped answer"
tmux send-keys -t "$SESSION" "/stats" Enter
wait_for "2 messages in the conversation"
# the next turn resends the stopped answer: the server's prompt cache holds it
tmux send-keys -t "$SESSION" "Go on" Enter
wait_answer "Go on"
tmux send-keys -t "$SESSION" C-c
wait_for "the answer so far stays in the conversation" 2
cached=$(metric st_prompt_cache_tokens_total)
[ "${cached:-0}" -ge 10 ] || fail "the next turn reused $cached cached tokens of the stopped answer"
tmux send-keys -t "$SESSION" "/stats" Enter
wait_for "4 messages in the conversation"
wait_for "prompt cache: 2 hits, 1 misses"  # "Hello there" missed; the two stopped turns hit
tmux send-keys -t "$SESSION" "/system" Enter  # a line in between: the next Ctrl-C only asks
wait_for "(system message cleared)"
tmux send-keys -t "$SESSION" "/reset" Enter
wait_for "(conversation cleared)"
tmux send-keys -t "$SESSION" C-c
wait_for "(Ctrl-C again to leave, or /quit)"
tmux send-keys -t "$SESSION" "/stats" Enter  # still there after one
wait_for "0 messages in the conversation"
tmux send-keys -t "$SESSION" C-c
wait_for "(Ctrl-C again to leave, or /quit)" 2
tmux send-keys -t "$SESSION" C-c
for _ in $(seq 200); do
  cmd=$(tmux display-message -p -t "$SESSION" '#{pane_current_command}')
  [ "$cmd" = sleep ] && break
  sleep 0.05
done
[ "$cmd" = sleep ] || fail "a second Ctrl-C at the prompt did not leave (pane runs $cmd)"
echo "st-chat in tmux: connect, streamed answer, /stats, /system, /reset, history, /quit, unreachable message,"
echo "  Ctrl-C stops an answer and keeps it, twice at the prompt leaves"
exit 0
