# ristretto255 (RFC 9496) in plain Python, for known-answer vectors only.
import hashlib, hmac
p = 2**255 - 19
d = (-121665 * pow(121666, p - 2, p)) % p
SQRT_M1 = pow(2, (p - 1) // 4, p)
def inv(x): return pow(x, p - 2, p)
def neg(x): return x % p & 1 == 1
def ct_abs(x): return (-x) % p if neg(x) else x % p
def sqrt_ratio_m1(u, v):
    u %= p; v %= p
    r = (u * pow(v, 3, p)) * pow(u * pow(v, 7, p), (p - 5) // 8, p) % p
    check = v * r * r % p
    correct = check == u
    flipped = check == (-u) % p
    flipped_i = check == (-u * SQRT_M1) % p
    if flipped or flipped_i: r = r * SQRT_M1 % p
    return (correct or flipped), ct_abs(r)
SQRT_AD_MINUS_ONE = 25063068953384623474111414158702152701244531502492656460079210482610430750235
INVSQRT_A_MINUS_D = 54469307008909316920995813868745141605393597292927456921205312896311721017578
ONE_MINUS_D_SQ = (1 - d * d) % p
D_MINUS_ONE_SQ = (d - 1) * (d - 1) % p
def add(P, Q):
    X1, Y1, Z1, T1 = P; X2, Y2, Z2, T2 = Q
    A = (Y1 - X1) * (Y2 - X2) % p; B = (Y1 + X1) * (Y2 + X2) % p
    C = T1 * 2 * d * T2 % p; D = Z1 * 2 * Z2 % p
    E, F, G, H = B - A, D - C, D + C, B + A
    return (E * F % p, G * H % p, F * G % p, E * H % p)
def mul(k, P):
    R = (0, 1, 1, 0)
    while k:
        if k & 1: R = add(R, P)
        P = add(P, P); k >>= 1
    return R
def encode(P):
    X0, Y0, Z0, T0 = P
    u1 = (Z0 + Y0) * (Z0 - Y0) % p
    u2 = X0 * Y0 % p
    _, invsqrt = sqrt_ratio_m1(1, u1 * u2 * u2)
    den1 = invsqrt * u1 % p; den2 = invsqrt * u2 % p
    z_inv = den1 * den2 * T0 % p
    ix0 = X0 * SQRT_M1 % p; iy0 = Y0 * SQRT_M1 % p
    ench = den1 * INVSQRT_A_MINUS_D % p
    rotate = neg(T0 * z_inv)
    x, y = (iy0, ix0) if rotate else (X0, Y0)
    den_inv = ench if rotate else den2
    if neg(x * z_inv): y = -y
    s = ct_abs(den_inv * (Z0 - y))
    return s.to_bytes(32, 'little')
def decode(b):
    s = int.from_bytes(b, 'little')
    assert s < p and not neg(s)
    ss = s * s % p; u1 = (1 - ss) % p; u2 = (1 + ss) % p; u2s = u2 * u2 % p
    v = (-(d * u1 * u1) - u2s) % p
    ok, invsqrt = sqrt_ratio_m1(1, v * u2s)
    den_x = invsqrt * u2 % p; den_y = invsqrt * den_x * v % p
    x = ct_abs(2 * s * den_x); y = u1 * den_y % p; t = x * y % p
    assert ok and not neg(t) and y != 0
    return (x, y, 1, t)
def map_(t):
    r = SQRT_M1 * t * t % p
    u = (r + 1) * ONE_MINUS_D_SQ % p
    v = (-1 - r * d) * (r + d) % p
    sq, s = sqrt_ratio_m1(u, v)
    s_prime = (-ct_abs(s * t)) % p
    s, c = (s, p - 1) if sq else (s_prime, r)
    N = (c * (r - 1) * D_MINUS_ONE_SQ - v) % p
    w0 = 2 * s * v % p; w1 = N * SQRT_AD_MINUS_ONE % p
    w2 = (1 - s * s) % p; w3 = (1 + s * s) % p
    return (w0 * w3 % p, w2 * w1 % p, w1 * w3 % p, w0 * w2 % p)
def from_hash(h):
    t1 = int.from_bytes(h[:32], 'little') & ((1 << 255) - 1)
    t2 = int.from_bytes(h[32:], 'little') & ((1 << 255) - 1)
    return encode(add(map_(t1 % p), map_(t2 % p)))
def scalarmult(n, Pb):
    k = bytearray(n); k[31] &= 127
    return encode(mul(int.from_bytes(k, 'little'), decode(Pb)))
