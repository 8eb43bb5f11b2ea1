#!/usr/bin/env python3
# Known-answer vector of proto/pake.c's exchange, from r255.py + hashlib/hmac only.
import hashlib, hmac, os, sys
sys.path.insert(0, os.path.dirname(__file__))
import r255
code = b"ABCDE23456"
n_c = bytes(range(0, 16)); n_n = bytes(range(16, 32))
y_n = bytearray(range(32, 64)); y_c = bytearray(range(64, 96))
h = hashlib.blake2b(b"st-pair-v1 G" + bytes([len(code)]) + code + n_c + n_n, digest_size=64).digest()
G = r255.from_hash(h)
Y_n = r255.scalarmult(y_n, G); Y_c = r255.scalarmult(y_c, G)
K = r255.scalarmult(y_n, Y_c); assert K == r255.scalarmult(y_c, Y_n)
T = b"st-pair-v1" + n_n + n_c + Y_c + Y_n
k = hashlib.blake2b(b"st-pair-v1 keys" + T, digest_size=64, key=K).digest()
k_n, k_c = k[:32], k[32:]
nkey = bytes(range(0xa0, 0xc0)); ckey = bytes(range(0xc0, 0xe0))
ep = b"tcp://*:5555"; nid = b"board-1"
proof = b"STP1\x03" + Y_n + nkey + bytes([len(ep)]) + ep + bytes([len(nid)]) + nid
mac_n = hmac.new(k_n, T + proof, hashlib.sha512).digest()[:32]
proof += mac_n
welcome = b"STP1\x04" + ckey
mac_c = hmac.new(k_c, T + mac_n + welcome, hashlib.sha512).digest()[:32]
welcome += mac_c
def c(name, b):
    s = ", ".join("0x%02x" % x for x in b)
    print("static const uint8_t %s[%d] = {%s};" % (name, len(b), s))
for n, v in [("kat_G", G), ("kat_Y_n", Y_n), ("kat_Y_c", Y_c), ("kat_K", K), ("kat_k_n", k_n), ("kat_k_c", k_c), ("kat_proof", proof), ("kat_welcome", welcome)]:
    c(n, v)
