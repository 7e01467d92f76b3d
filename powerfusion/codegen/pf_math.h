/* pf_math.h -- vectorisable float32 math for PowerFusion's C + OpenMP backend.
 *
 * Every function is `static inline`, branch-free (selects instead of `if`,
 * integer bit tricks through a union, fma) and calls nothing in libm, so GCC
 * can inline and auto-vectorise it inside a `#pragma omp simd` loop built with
 *     gcc -O3 -march=native -fopenmp -fno-math-errno -fno-trapping-math
 * No -ffast-math is needed or assumed: NaN, +-inf, +-0 and subnormals follow
 * IEEE/libm (NaN in -> NaN out, exp(+-inf) = inf/0, log(0) = -inf, ...).
 *
 * Errors below are the measured maximum over tests/test_math_ulp.py's sweep
 * (about 3e6 points per function: dense over the useful range, random bit
 * patterns over all finite floats, subnormals, special values), in ULP of the
 * float32 result against a float64 reference.  They assume a target with
 * hardware FMA (x86 -mfma / -march=native on Haswell+ or Zen, AArch64).
 * Without FMA, PF_FMA falls back to a*b+c (sin/cos: exact products, see there).
 */
#ifndef PF_MATH_H
#define PF_MATH_H

#include <stdint.h>

#if defined(__FP_FAST_FMAF)
#define PF_FMA(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define PF_FMA(a, b, c) ((a) * (b) + (c))
#endif
/* the same in double; the generated code is built with -ffp-contract=off (x * y + z
 * rounds twice, as numpy's does), so a fused multiply-add here is asked for by name */
#if defined(__FP_FAST_FMA)
#define PF_FMAD(a, b, c) __builtin_fma((a), (b), (c))
#else
#define PF_FMAD(a, b, c) ((a) * (b) + (c))
#endif

#define PF_INFF (__builtin_inff())
#define PF_NANF (__builtin_nanf(""))

/* ---- bit casts (a union: GCC folds it into a register move) ---- */
static inline uint32_t pf__asuint(float f) { union { float f; uint32_t u; } v; v.f = f; return v.u; }
static inline float pf__asfloat(uint32_t u) { union { float f; uint32_t u; } v; v.u = u; return v.f; }
static inline float pf__absf(float x) { return pf__asfloat(pf__asuint(x) & 0x7fffffffu); }
static inline float pf__copysignf(float m, float s) {
    return pf__asfloat((pf__asuint(m) & 0x7fffffffu) | (pf__asuint(s) & 0x80000000u));
}
/* the rounding error of ab = a*b, exactly: a*b == ab + pf__mul_lo(a, b, ab) */
static inline float pf__mul_lo(float a, float b, float ab) {
#if defined(__FP_FAST_FMAF)
    return __builtin_fmaf(a, b, -ab);
#else
    return (float)((double)a * (double)b - (double)ab);
#endif
}
static inline float pf__sqr_lo(float x, float xx) { return pf__mul_lo(x, x, xx); }

/* exp(x): Cody-Waite reduction x = n*ln2 + r, |r| <= ln2/2, exp(r) = 1 + r + r^2 q(r)
 * with q a degree-4 minimax polynomial (relative error 2^-28), scale by 2^n in two
 * halves (exact overflow / gradual underflow).  Only the top is clamped before the
 * reduction; far below the subnormal range the result is selected to 0 at the end
 * (GCC turns two chained NaN-preserving clamps into seven instructions).
 * Max error 0.99 ULP (normal and subnormal results). */
/* exp(r) * 2^n for the reduced r and t = n + magic (n in the low bits of t's
 * mantissa): the polynomial and the scaling, shared by the reductions below */
static inline float pf__exp_scale(float t, float r) {
    const float magic = 0x1.8p23f;
    int32_t ni = (int32_t)(pf__asuint(t) - pf__asuint(magic));
    float r2 = r * r;
    float p = 1.3814612757e-03f;
    p = PF_FMA(p, r, 8.3687100559e-03f);
    p = PF_FMA(p, r, 4.1668388993e-02f);
    p = PF_FMA(p, r, 1.6666521132e-01f);
    p = PF_FMA(p, r, 4.9999994040e-01f);
    p = PF_FMA(p, r2, r) + 1.0f;
    int32_t n1 = ni >> 1, n2 = ni - n1;    /* |n| <= 150 */
    float s1 = pf__asfloat((uint32_t)(n1 + 127) << 23);
    float s2 = pf__asfloat((uint32_t)(n2 + 127) << 23);
    return (p * s1) * s2;                  /* p*s1 is exact: a single rounding */
}
/* exp(xc) for -104 <= xc <= 89 (or NaN) */
static inline float pf__exp_core(float xc) {
    const float magic = 0x1.8p23f;        /* adding it rounds to an integer */
    float t = PF_FMA(xc, 0x1.715476p+0f, magic);
    float n = t - magic;
    float r = PF_FMA(n, -0.693359375f, xc);         /* ln2 = C1 + C2, C1 exact in 9 bits */
    r = PF_FMA(n, 2.12194440e-4f, r);
    return pf__exp_scale(t, r);
}
static inline float pf_expf(float x) {
    float xc = x > 89.0f ? 89.0f : x;     /* NaN compares false and passes through */
    float y = pf__exp_core(xc);            /* below -104, ni may wrap: selected away */
    return x < -104.0f ? 0.0f : y;         /* exp(-104) < 2^-150: rounds to 0 */
}

/* log(x): x = 2^k * (1+f), sqrt(1/2) <= 1+f < sqrt(2), s = f/(2+f),
 * degree-4 (in s^2) fdlibm minimax polynomial, ln2 split hi/lo.
 * Max error 0.75 ULP. */
static inline float pf_logf(float x) {
    int sub = x < 0x1p-126f;               /* subnormal (or <= 0: fixed up below) */
    float xs = sub ? x * 0x1p23f : x;
    int32_t k = sub ? -23 : 0;
    uint32_t ix = pf__asuint(xs) + (0x3f800000u - 0x3f3504f3u);
    k += (int32_t)(ix >> 23) - 0x7f;
    ix = (ix & 0x007fffffu) + 0x3f3504f3u;
    float f = pf__asfloat(ix) - 1.0f;
    float s = f / (2.0f + f);
    float z = s * s, w = z * z;
    float t1 = w * PF_FMA(w, 2.4279078841e-01f, 4.0000972152e-01f);
    float t2 = z * PF_FMA(w, 2.8498786688e-01f, 6.6666662693e-01f);
    float R = t2 + t1;
    float hfsq = 0.5f * f * f;
    float dk = (float)k;
    float r = PF_FMA(s, hfsq + R, dk * 9.0580006145e-06f) - hfsq + f + dk * 6.9313812256e-01f;
    float special = x == 0.0f ? -PF_INFF : (x < 0.0f ? PF_NANF : x + x);  /* +inf, NaN */
    return ((x > 0.0f) & (x < PF_INFF)) ? r : special;
}

/* tanh(x) = sign(x) * E/(E+2), E = expm1(2|x|) (|x| clamped to 10: tanh rounds to 1
 * from 9.01 on).  2|x| = n*ln2 + r as in pf__exp_core, expm1(r) = r + r^2 q(r) with
 * exp's polynomial, E = 2^n expm1(r) + (2^n - 1) in one fma: n >= 0, so the sum
 * cancels little (expm1(r)'s error grows 1.41x at most, at n = 1), and n = 0
 * (|x| < 0.17) leaves E = expm1(r), accurate down to the smallest |x|.  One formula
 * for every x: no polynomial of its own near 0, no select, no clamp at the bottom
 * (2^n is built from t's low bits, one scale).  Max error 1.32 ULP, with or without FMA.
 * The exp-plus-polynomial form before it (1.24 ULP) took 1.3x the time on Zen1. */
static inline float pf_tanhf(float x) {
    const float magic = 0x1.8p23f;
    float ax = pf__absf(x);
    float y = ax > 10.0f ? 20.0f : ax + ax;  /* NaN compares false and passes through */
    float t = PF_FMA(y, 0x1.715476p+0f, magic);
    float n = t - magic;
    float r = PF_FMA(n, -0.693359375f, y);
    r = PF_FMA(n, 2.12194440e-4f, r);
    float p = 1.3814612757e-03f;
    p = PF_FMA(p, r, 8.3687100559e-03f);
    p = PF_FMA(p, r, 4.1668388993e-02f);
    p = PF_FMA(p, r, 1.6666521132e-01f);
    p = PF_FMA(p, r, 4.9999994040e-01f);
    float em = PF_FMA(p, r * r, r);                                  /* expm1(r) */
    float s = pf__asfloat((pf__asuint(t) << 23) + 0x3f800000u);      /* 2^n, n <= 29 */
    float e = PF_FMA(s, em, s - 1.0f);                               /* expm1(2|x|) */
    return pf__copysignf(e / (e + 2.0f), x);
}

/* sigmoid(x) = 1/(1+exp(-x)) evaluated as 1/(1+e) (x >= 0) or e/(1+e) (x < 0)
 * with e = exp(-|x|): no overflow, relative accuracy kept down to the
 * subnormal results of x < -87.  Max error 2.30 ULP. */
static inline float pf_sigmoidf(float x) {
    float e = pf_expf(-pf__absf(x));
    float d = 1.0f + e;
    return (x >= 0.0f ? 1.0f : e) / d;     /* one division: gcc divides twice for 1/d : e/d */
}

/* erf(x)/x - 1 for |x| <= 0.9 as a degree-6 polynomial in x^2 (minimax on
 * relative error of erf). */
static inline float pf__erf_small_q(float s) {
    float q = 7.943100354e-05f;
    q = PF_FMA(q, s, -8.039752720e-04f);
    q = PF_FMA(q, s, 5.191753153e-03f);
    q = PF_FMA(q, s, -2.685556002e-02f);
    q = PF_FMA(q, s, 1.128362417e-01f);
    q = PF_FMA(q, s, -3.761262894e-01f);
    q = PF_FMA(q, s, 1.283791661e-01f);
    return q;
}

/* erf(x): |x| < 0.9: x + x*Q(x^2) (degree-6 minimax); else sign(x)*(1 - erfc(t)),
 * t = |x| clamped to 4 (erf rounds to +-1 from 3.92), erfc(t) = exp(-t^2) * N(t)/D(t),
 * a (3,3) rational fitted on erfcx's relative error over [0.88, 4] (2^-24); exp(-t^2)
 * as in pf_geluf below: t^2 = tt + ttl exactly, an exact first reduction step, a degree-6
 * polynomial, 2^n (n >= -23) an integer add to its exponent.  1 - erfc damps erfc's
 * error at least 4x.  Max error 1.24 ULP (1.44 without FMA), both at the tail's start.
 * The tail before it (a division for tau, a degree-9 polynomial, the hi + lo exp; 1.29
 * ULP) took 2x the time on Zen1 (one core, L2: 5.55 -> 2.74 ns/elem; ATen's 2.42). */
static inline float pf_erff(float x) {
    const float magic = 0x1.8p23f;
    float t = pf__absf(x);
    float small = PF_FMA(x, pf__erf_small_q(x * x), x);
    uint32_t ut = pf__asuint(t);               /* min(t, 4) on the bits; NaN becomes 4 */
    float tc = pf__asfloat(ut < 0x40800000u ? ut : 0x40800000u);
    float tt = tc * tc, ttl = pf__sqr_lo(tc, tt);
    float tn = PF_FMA(tt, -0x1.715476p+0f, magic);    /* n = round(-t^2 / ln2) */
    float n = tn - magic;
    float r = PF_FMA(n, -0.693359375f, -tt);           /* exact */
    r = PF_FMA(n, 2.12194440e-4f, r) - ttl;
    float e = 0x1.6ae6d2p-10f;                         /* exp(r), |r| <= ln2/2 */
    e = PF_FMA(e, r, 0x1.126798p-7f);
    e = PF_FMA(e, r, 0x1.555822p-5f);
    e = PF_FMA(e, r, 0x1.55541ap-3f);
    e = PF_FMA(e, r, 0x1.fffffcp-2f);
    e = PF_FMA(e, r, 1.0f);
    e = PF_FMA(e, r, 1.0f);
    e = pf__asfloat(pf__asuint(e) + (pf__asuint(tn) << 23));   /* exp(-t^2) */
    float p = -0x1.6fe29ap-13f;
    p = PF_FMA(p, tc, 0x1.229a64p-1f);
    p = PF_FMA(p, tc, 0x1.c1c092p+0f);
    p = PF_FMA(p, tc, 0x1.2e9d38p+1f);
    float q = tc + 0x1.952404p+1f;
    q = PF_FMA(q, tc, 0x1.1c0d1ap+2f);
    q = PF_FMA(q, tc, 0x1.2e44ccp+1f);
    float big = pf__copysignf(1.0f - e * (p / q), x);
    return t >= 0.9f ? big : small;            /* NaN: small carries it */
}

/* gelu(x) = x * Phi(x).  One formula for every x: with a = |x|, the Gaussian tail
 * Q(a) = erfc(a/sqrt2)/2 = exp(-a^2/2) * G(a), G = P/(N + c*a*P) (P, N degree 4: a
 * (4,5) rational fitted on the relative error of G over a in [0, 14.4], 2^-26.3, in a
 * form whose rounding errors are damped by the c*a*P that dominates the denominator),
 * and Phi = x > 0 ? 1 - Q : Q, so the negative tail keeps relative accuracy.
 * exp(-a^2/2) = 2^n exp(u/2): a^2 = aa + aal exactly, u = -aa - 2n ln2 exact
 * (ln2's first part has 9 bits), then - aal; exp(u/2) a degree-6 polynomial; 2^(n+32)
 * from t's low bits (n >= -150: |x| is clamped to 14.375, where gelu < 2^-150).
 * The 2^32 is folded into the exp polynomial (so 2^n is an integer add to e's exponent
 * field) and its inverse into P and c: Q costs one product.  No erf polynomial near 0,
 * no second branch, one division.  Max error 4.27 ULP (4.84 without FMA) for
 * x >= -12.8; below, results < 2e-36 and the absolute error stays under 2^-142.
 * The erf-near-0 plus erfc-in-the-tails form before it (5.1 ULP) took 2.8x the time
 * on Zen1 (one core, L2: 7.2 -> 2.6 ns/elem; ATen's 2.9). */
static inline float pf_geluf(float x) {
    const float magic = 0x1.8p23f;
    float xc = x < -14.375f ? -14.375f : x;  /* NaN compares false and passes through */
    /* a = min(|x|, 14.375) on the bits (NaN becomes 14.375: xc carries it): as a float
     * select, gcc pushes the products of a through it, one blend each */
    uint32_t ua = pf__asuint(x) & 0x7fffffffu;
    float a = pf__asfloat(ua < 0x41660000u ? ua : 0x41660000u);
    float aa = a * a, aal = pf__sqr_lo(a, aa);
    float t = PF_FMA(aa, -0x1.715476p-1f, magic);   /* n = round(-a^2/2 / ln2) */
    float n = t - magic;
    float u = PF_FMA(n, -1.38671875f, -aa);         /* -a^2 - 2n ln2 = u, exact part */
    u = PF_FMA(n, 4.2438888e-4f, u) - aal;
    float e = 0x1.6ae6d2p+16f;                       /* 2^32 exp(u/2), |u| <= ln2 */
    e = PF_FMA(e, u, 0x1.126798p+20f);
    e = PF_FMA(e, u, 0x1.555822p+23f);
    e = PF_FMA(e, u, 0x1.55541ap+26f);
    e = PF_FMA(e, u, 0x1.fffffcp+28f);
    e = PF_FMA(e, u, 0x1p31f);
    e = PF_FMA(e, u, 0x1p32f);
    e = pf__asfloat(pf__asuint(e) + (pf__asuint(t) << 23));   /* times 2^n, n >= -150 */
    float p = 0x1.9885900p-34f;                      /* 2^-32 P(a) */
    p = PF_FMA(p, a, 0x1.f86d0a0p-31f);
    p = PF_FMA(p, a, 0x1.1c7b720p-28f);
    p = PF_FMA(p, a, 0x1.5461f00p-27f);
    p = PF_FMA(p, a, 0x1.8484640p-27f);
    float q = 0x1.89a6dc0p-11f;
    q = PF_FMA(q, a, 0x1.f8c1380p-1f);
    q = PF_FMA(q, a, 0x1.426d120p+3f);
    q = PF_FMA(q, a, 0x1.46e47e0p+5f);
    q = PF_FMA(q, a, 0x1.8484640p+6f);
    float c = e * (p / PF_FMA(0x1.40d83ap+33f * a, p, q));   /* Q(a) = exp(-a^2/2) G(a) */
    float phi = x > 0.0f ? 1.0f - c : c;
    return xc * phi;
}

/* gelu_tanh(x) = 0.5*x*(1+tanh(u)), u = sqrt(2/pi)*(x + 0.044715*x^3), computed
 * as x*sigmoid(2u) (identical, without cancellation for x < 0): x/(1+e) for x >= 0,
 * x*e/(1+e) below, e = exp(-|2u|).  |2u| = 2u(|x|) is carried as hi + lo in floats
 * (c0 = 2 sqrt(2/pi) and c1 = 0.044715 c0 split in two, x^2 and the products exact
 * by fma, the sum c0 + c1 x^2 by TwoSum) so that e keeps relative accuracy where
 * |2u| is large: float only, twice the SIMD lanes of a double evaluation.
 * Max error 3.3 ULP for x >= -9.9; below, e is subnormal and the absolute error
 * stays under 2^-142 (results < 2e-37). */
static inline float pf_gelu_tanhf(float x) {
    float ax = pf__absf(x);
    ax = ax < 20.0f ? ax : 20.0f;            /* NaN becomes 20: x carries it below */
    const float c0h = 0x1.988454p+0f, c0l = -0x1.857936p-25f;
    const float c1h = 0x1.2444f2p-4f, c1l = 0x1.49b16ap-29f;
    float xx = ax * ax, xxl = pf__sqr_lo(ax, xx);
    float p = c1h * xx, pl = pf__mul_lo(c1h, xx, p);
    float s = c0h + p, sb = s - c0h;         /* TwoSum(c0h, p) = s + err */
    float err = (c0h - (s - sb)) + (p - sb);
    float tl = PF_FMA(c1h, xxl, PF_FMA(c1l, xx, (c0l + pl) + err));
    float uh = ax * s;                       /* |2u| = uh + ul */
    float ul = PF_FMA(ax, tl, pf__mul_lo(ax, s, uh));
    float a = -uh > -104.0f ? -uh : -104.0f;  /* exp(-104) * 20 < 2^-142 */
    float em = pf__exp_core(a);
    float e = PF_FMA(-ul, em, em);           /* exp(-uh - ul) = exp(-uh) (1 - ul) */
    float num = x >= 0.0f ? x : x * e;
    float r = num / (1.0f + e);
    return x < -20.0f ? -0.0f : r;           /* true value underflows; avoids -inf*0 */
}

/* silu(x) = x*sigmoid(x).  Max error 3.04 ULP for x >= -87; below, sigmoid is
 * subnormal and the absolute error stays under 2^-142 (results < 2e-36). */
static inline float pf_siluf(float x) {
    float r = x * pf_sigmoidf(x);
    return x < -200.0f ? -0.0f : r;          /* -inf * 0 would be NaN */
}

/* 1/sqrt(x) with the sqrt instruction and a true division (two roundings):
 * rsqrt(+0) = +inf, rsqrt(-0) = -inf, rsqrt(inf) = 0, rsqrt(x<0) = NaN.
 * Max error 1.48 ULP. */
static inline float pf_rsqrtf(float x) { return 1.0f / __builtin_sqrtf(x); }

/* ---- log1p, log2, log10, expm1, exp2: in double, rounded once ----
 * A float is exact in a double (subnormals included, so no subnormal path), and a
 * double evaluation whose relative error is near 2^-40 rounds to the float result
 * nearest the true one but for a few ties: errors stay within 0.5 ULP and a hair.
 * Half the SIMD lanes of the float functions above, and no special cases to tune.
 * pf__asdouble / pf__asuint64 bit casts, as for floats. */
static inline uint64_t pf__asuint64(double d) {
    union { double d; uint64_t u; } v; v.d = d; return v.u;
}
static inline double pf__asdouble(uint64_t u) {
    union { double d; uint64_t u; } v; v.u = u; return v.d;
}

/* log(u) for a finite double u > 0 (the callers' special cases are selected after):
 * u = 2^k * m, sqrt(1/2) <= m < sqrt(2), log(m) = 2 atanh(s), s = (m-1)/(m+1),
 * |s| < 0.172: the atanh series to s^13 (next term < 2^-39 of the sum).
 * k comes out of the exponent bits through a double (0x1.8p52 + e - 0x1.8p52):
 * 64-bit integer ops only, which vectorise where int64 -> double conversion may not. */
static inline double pf__logd(double u) {
    uint64_t iu = pf__asuint64(u) + (0x3ff0000000000000ull - 0x3fe6a09e667f3bcdull);
    double k = pf__asdouble(0x4338000000000000ull | (iu >> 52)) - 0x1.8p52 - 1023.0;
    double m = pf__asdouble((iu & 0x000fffffffffffffull) + 0x3fe6a09e667f3bcdull);
    double s = (m - 1.0) / (m + 1.0);
    double z = s * s;
    double p = 1.0 / 13;
    p = PF_FMAD(p, z, 1.0 / 11);
    p = PF_FMAD(p, z, 1.0 / 9);
    p = PF_FMAD(p, z, 1.0 / 7);
    p = PF_FMAD(p, z, 1.0 / 5);
    p = PF_FMAD(p, z, 1.0 / 3);
    double atanh2 = 2.0 * PF_FMAD(s * z, p, s);
    return PF_FMAD(k, 0x1.62e42fefa39efp-1, atanh2);      /* + k*ln2 */
}

/* log of a float argument (x itself, the caller having formed no sum): NaN below 0,
 * -inf at 0, inf at inf, NaN at NaN, else the double log scaled by `scale` */
static inline float pf__logf_scaled(float x, double scale) {
    float r = (float)(pf__logd((double)x) * scale);
    float special = x == 0.0f ? -PF_INFF : (x < 0.0f ? PF_NANF : x + x);
    return ((x > 0.0f) & (x < PF_INFF)) ? r : special;
}

/* log2(x), log10(x): the double log times 1/ln2 or 1/ln10.  Exact at powers of two
 * (log2) and at the float powers of ten (log10).  Max error 0.50 ULP. */
static inline float pf_log2f(float x) { return pf__logf_scaled(x, 0x1.71547652b82fep+0); }
static inline float pf_log10f(float x) { return pf__logf_scaled(x, 0x1.bcb7b1526e50ep-2); }

/* log1p(x) = log(u) + (x - (u - 1))/u with u = 1 + x rounded in double: the
 * quotient restores what the rounding of u lost, so tiny x keeps its relative
 * accuracy (log1p(x) = x for |x| < 2^-25).  Max error 0.50 ULP. */
static inline float pf_log1pf(float x) {
    double X = (double)x;
    double u = 1.0 + X;
    double c = (X - (u - 1.0)) / u;
    float r = (float)(pf__logd(u) + c);
    float special = x == -1.0f ? -PF_INFF : (x < -1.0f ? PF_NANF : x + x);
    r = x == 0.0f ? x : r;                                    /* log1p(-0) = -0 */
    return ((x > -1.0f) & (x < PF_INFF)) ? r : special;
}

/* 2^n * e^t - 1 or 2^n * e^t, for |t| <= ln2/2 and -152 <= n <= 129 (exact scale):
 * e^t - 1 as the Taylor series to t^10 (next term < 2^-40 of it). */
static inline double pf__expm1_poly(double t) {
    double p = 1.0 / 3628800;
    p = PF_FMAD(p, t, 1.0 / 362880);
    p = PF_FMAD(p, t, 1.0 / 40320);
    p = PF_FMAD(p, t, 1.0 / 5040);
    p = PF_FMAD(p, t, 1.0 / 720);
    p = PF_FMAD(p, t, 1.0 / 120);
    p = PF_FMAD(p, t, 1.0 / 24);
    p = PF_FMAD(p, t, 1.0 / 6);
    p = PF_FMAD(p, t, 0.5);
    return PF_FMAD(t * t, p, t);
}
static inline double pf__exp2i(double n) {              /* 2^n for an integer n in a double */
    return pf__asdouble((uint64_t)(pf__asuint64(n + 0x1.8p52) + 1023) << 52);
}

/* expm1(x) = 2^n (e^r - 1) + (2^n - 1), x = n ln2 + r, |r| <= ln2/2 (ln2 in two
 * parts: n*hi is exact); beyond [-30, 89] the float result is -1 or inf.
 * Max error 0.50 ULP. */
static inline float pf_expm1f(float x) {
    double X = (double)(x > 89.0f ? 89.0f : (x < -30.0f ? -30.0f : x));
    double n = __builtin_rint(X * 0x1.71547652b82fep+0);
    double r = PF_FMAD(n, -0x1.62e42fefa3800p-1, X);
    r = PF_FMAD(n, -0x1.ef35793c76730p-45, r);
    double s = pf__exp2i(n);
    float y = (float)PF_FMAD(s, pf__expm1_poly(r), s - 1.0);
    y = x > 89.0f ? PF_INFF : y;                 /* e^89 overflows float: so does inf */
    return (x == 0.0f) | (x != x) ? x + x : y;  /* -0 stays -0, NaN stays NaN */
}

/* exp2(x) = 2^n * e^(r ln2), n = rint(x), |r| <= 1/2 exact in float; beyond
 * [-152, 129] the float result is 0 or inf.  Exact at integers.  Max error 0.50 ULP. */
static inline float pf_exp2f(float x) {
    float xc = x > 129.0f ? 129.0f : (x < -152.0f ? -152.0f : x);
    float n = __builtin_rintf(xc);
    double t = (double)(xc - n) * 0x1.62e42fefa39efp-1;
    double s = pf__exp2i((double)n);
    float y = (float)PF_FMAD(s, pf__expm1_poly(t), s);
    return x != x ? x : y;
}

/* ---- sin / cos ----
 * Reduction: x*2/pi = n + f with n an integer and |f| <= 1/2 (a hair more next
 * to the ties of n), r = f*pi/2, and sin or cos of x is +-sin(r) or +-cos(r) by
 * n mod 4: Cephes' degree-3 (in r^2) polynomials on [-pi/4, pi/4].
 * The reduction is right for every float (Payne-Hanek in double, no table):
 * x is exact in a double, and of 2/pi only the bits that matter for x's range
 * are kept -- bits whose product with every x of the range is a multiple of 4
 * change neither n mod 4 nor f.  One set of chunks serves |x| < 2^64, another
 * |x| >= 2^64.  Each chunk product is carried exactly (an fma split, or 29-bit
 * chunks without FMA), the parts that can pass 2 are reduced mod 4 exactly, and
 * the sums that take n off are exact where f is small: f comes out with a
 * relative error near 2^-52 and an absolute one below 2^-66, and over every
 * float the smallest |f| is 2^-29.9 (x = 0x1.f37c8ap+95).
 * Every lane pays for the whole reduction (GCC does not vectorise a branch to a
 * slow path): sin is 3.7x the old float Cody-Waite reduction in an AVX-512
 * loop (0.58 against 0.155 ns per float), which was wrong from |x| = 2^22 on.
 * rint: vectorised with SSE4.1 and up, or AArch64; plain SSE2 runs it scalar.
 * Inf and NaN give NaN.  Max error, exhaustive over every float with and
 * without FMA: 1.59 ULP (sin), 1.58 ULP (cos). */

/* v - 4*round(v/4): v mod 4 in [-2, 2], exact for every double */
static inline double pf__mod4(double v) { return v - 4.0 * __builtin_rint(0.25 * v); }

/* x = (n + f) pi/2: returns f*pi/2 in double, sets *q = n mod 2^32 */
static inline double pf__reduce_pio2(float x, int32_t *q) {
    double X = (double)x;
    int big = pf__absf(x) >= 0x1p64f;           /* NaN: the small set, NaN anyway */
#if defined(__FP_FAST_FMA)
    /* 2/pi mod 2^26 (all of it) or mod 2^-39, as three 53-bit chunks */
    double c0 = big ? 0x1.1054a7f09d5f4p-42 : 0x1.45f306c000000p-1;
    double c1 = big ? 0x1.f534ddc0db628p-96 : 0x1.c9c882a53f84ep-29;
    double c2 = big ? 0x1.5993c439041fcp-148 : 0x1.5f47d4d377036p-82;
    /* X*c0 - 4*round(X*c0/4) is exact for |x| >= 1/2 (of the product's 77 bits
     * at most 53 are left); below, it is X*c0 rounded, and n = 0.
     * X*c1 == h1 + l1 exactly. */
    double k0 = __builtin_rint(0.25 * (X * c0));
    double a0 = pf__mod4(__builtin_fma(X, c0, -4.0 * k0));
    double h1 = X * c1, l1 = __builtin_fma(X, c1, -h1);
    double a1 = pf__mod4(h1);
    double t = (a0 + a1) + 0x1.8p52;            /* round to an integer: n, and */
    double n = t - 0x1.8p52;                    /* n mod 2^32 in the low bits  */
    double f = ((a0 - n) + a1) + (l1 + X * c2);           /* tail < 2^-15 */
#else
    /* the same in six 29-bit chunks: every X*ci is exact */
    double c0 = big ? 0x1.1054a7cp-42 : 0x1.4p-1;
    double c1 = big ? 0x1.84eafa3p-69 : 0x1.7cc1b7p-7;
    double c2 = big ? 0x1.d4d377p-98 : 0x1.391054ap-34;
    double c3 = big ? 0x1.b6c52bp-129 : 0x1.fc2757cp-64;
    double c4 = big ? 0x1.93c439p-156 : 0x1.1f534dcp-92;
    double c5 = big ? 0x1.07f9458p-186 : 0x1.c0db629p-120;
    double a0 = pf__mod4(X * c0), a1 = pf__mod4(X * c1);
    double a2 = pf__mod4(X * c2), a3 = pf__mod4(X * c3);
    double t = (((a0 + a1) + a2) + a3) + 0x1.8p52;
    double n = t - 0x1.8p52;
    double f = ((((a0 - n) + a1) + a2) + a3) + (X * c4 + X * c5);
#endif
    *q = (int32_t)(uint32_t)pf__asuint64(t);
    return f * 1.5707963267948966;
}

static inline float pf__sincosf(float x, int32_t q_off) {
    int32_t q;
    float r = (float)pf__reduce_pio2(x, &q);
    q += q_off;
    float z = r * r;
    float s = -1.9515295891e-4f;
    s = PF_FMA(s, z, 8.3321608736e-3f);
    s = PF_FMA(s, z, -1.6666654611e-1f);
    s = PF_FMA(s * z, r, r);
    float c = 2.443315711809948e-5f;
    c = PF_FMA(c, z, -1.388731625493765e-3f);
    c = PF_FMA(c, z, 4.166664568298827e-2f);
    c = PF_FMA(c * z, z, PF_FMA(-0.5f, z, 1.0f));
    float v = (q & 1) ? c : s;
    return pf__asfloat(pf__asuint(v) ^ ((uint32_t)(q & 2) << 30));
}

/* sin(x): see pf__sincosf.  Max error 1.59 ULP, every float. */
static inline float pf_sinf(float x) {
    float y = pf__sincosf(x, 0);
    return x == 0.0f ? x : y;                   /* sin(-0) = -0 */
}

/* cos(x): see pf__sincosf.  Max error 1.58 ULP, every float. */
static inline float pf_cosf(float x) { return pf__sincosf(x, 1); }

/* tan(x): the reduction of sin/cos, then sin(r)/cos(r) (n even) or -cos(r)/sin(r)
 * (n odd) in double, the Taylor series of both to r^13 and r^14 on |r| <= pi/4
 * (next terms < 2^-44 of them), rounded once.  Inf and NaN give NaN.
 * Max error 0.50 ULP, every float. */
static inline float pf_tanf(float x) {
    int32_t q;
    double r = pf__reduce_pio2(x, &q);
    double z = r * r;
    double s = -1.0 / 6227020800;                /* -1/13! */
    s = PF_FMAD(s, z, 1.0 / 39916800);
    s = PF_FMAD(s, z, -1.0 / 362880);
    s = PF_FMAD(s, z, 1.0 / 5040);
    s = PF_FMAD(s, z, -1.0 / 120);
    s = PF_FMAD(s, z, 1.0 / 6);
    s = PF_FMAD(-s * z, r, r);                   /* r - r^3/6 + ... */
    double c = -1.0 / 87178291200;               /* -1/14! */
    c = PF_FMAD(c, z, 1.0 / 479001600);
    c = PF_FMAD(c, z, -1.0 / 3628800);
    c = PF_FMAD(c, z, 1.0 / 40320);
    c = PF_FMAD(c, z, -1.0 / 720);
    c = PF_FMAD(c, z, 1.0 / 24);
    c = PF_FMAD(c * z, z, PF_FMAD(-0.5, z, 1.0)); /* 1 - r^2/2 + r^4/24 - ... */
    float y = (float)((q & 1) ? -c / s : s / c);
    return x == 0.0f ? x : y;                    /* tan(-0) = -0 */
}

/* ---- storage conversions ----
 * Bit manipulation, branch-free, exact (round to nearest even, overflow to
 * inf, subnormals, NaN stays NaN with numpy's payload rule).  GCC 12 does not
 * vectorise _Float16 <-> float casts (no vector HF modes without AVX512-FP16),
 * so they are opt-in: -DPF_MATH_USE_FLOAT16 (needs _Float16, and F16C on x86). */
#if defined(PF_MATH_USE_FLOAT16)
static inline float pf_f16_to_f32(uint16_t h) {
    union { _Float16 f; uint16_t u; } v; v.u = h; return (float)v.f;
}
static inline uint16_t pf_f32_to_f16(float f) {
    union { _Float16 f; uint16_t u; } v; v.f = (_Float16)f; return v.u;
}
#else
/* f16 -> f32: rebias the exponent; subnormals via an exact float subtraction. */
static inline float pf_f16_to_f32(uint16_t h) {
    uint32_t hu = h;
    uint32_t o = (hu & 0x7fffu) << 13;
    uint32_t e = o & 0x0f800000u;
    o += 0x38000000u;                                    /* (127-15) << 23 */
    uint32_t o_inf = o + 0x38000000u;                    /* inf/NaN: exponent 255 */
    uint32_t o_sub = pf__asuint(pf__asfloat(o + 0x00800000u) - 0x1p-14f);
    /* selects as masks: GCC 12 miscompiles these two nested ?: with AVX-512 when the
     * loop also holds a max and a min reduction (a wrong max, tests/test_ops.py) */
    uint32_t is_inf = -(uint32_t)(e == 0x0f800000u), is_sub = -(uint32_t)(e == 0u);
    o = (o_inf & is_inf) | (o_sub & is_sub) | (o & ~(is_inf | is_sub));
    return pf__asfloat(o | ((hu & 0x8000u) << 16));
}
/* f32 -> f16, round to nearest even (F. Giesen's float_to_half_fast3_rtne). */
static inline uint16_t pf_f32_to_f16(float f) {
    uint32_t u = pf__asuint(f);
    uint32_t sign = u & 0x80000000u;
    u ^= sign;
    uint32_t m = (u >> 13) & 0x3ffu;
    uint32_t r_nan = 0x7c00u | (m ? m : 1u);             /* payload kept, like numpy */
    uint32_t r_inf = u > 0x7f800000u ? r_nan : 0x7c00u;
    uint32_t r_sub = pf__asuint(pf__asfloat(u) + 0.5f) - 0x3f000000u;  /* RNE by the FPU */
    uint32_t r_norm = (u + 0xc8000fffu + ((u >> 13) & 1u)) >> 13;     /* rebias + RNE */
    uint32_t r = u >= 0x47800000u ? r_inf : (u < 0x38800000u ? r_sub : r_norm);
    return (uint16_t)(r | (sign >> 16));
}
#endif

/* bf16 -> f32: the high half of a float. */
static inline float pf_bf16_to_f32(uint16_t h) { return pf__asfloat((uint32_t)h << 16); }

/* f32 -> bf16, round to nearest even; NaN is quietened (never rounds to inf).
 * Selected on 32-bit words, one shift after (NaN found by f != f): 32 AVX2 instructions
 * per 16 floats where a shift on each side of an unsigned-compare select took 46. */
static inline uint16_t pf_f32_to_bf16(float f) {
    uint32_t u = pf__asuint(f);
    uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)((f != f ? (u | 0x00400000u) : r) >> 16);
}

#endif /* PF_MATH_H */
