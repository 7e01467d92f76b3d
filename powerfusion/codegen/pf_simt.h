/* pf_simt.h: what every SIMT module (CUDA, HIP, OpenCL) defines before its kernels:
   pf_math.h's functions and the 16-bit storage conversions, on the device. The printer
   puts its dialect's words in front: PF_FN (a device function's qualifiers), PF_AS_FLOAT
   and PF_AS_UINT (bit casts), and PF_EXPF, PF_LOGF, ... (the dialect's float functions:
   expf on CUDA and HIP, exp on OpenCL). */
PF_FN float pf_expf(float x) { return PF_EXPF(x); }
PF_FN float pf_logf(float x) { return PF_LOGF(x); }
PF_FN float pf_tanhf(float x) { return PF_TANHF(x); }
PF_FN float pf_erff(float x) { return PF_ERFF(x); }
PF_FN float pf_sinf(float x) { return PF_SINF(x); }
PF_FN float pf_cosf(float x) { return PF_COSF(x); }
PF_FN float pf_rsqrtf(float x) { return PF_RSQRTF(x); }
PF_FN float pf_tanf(float x) { return PF_TANF(x); }
PF_FN float pf_log1pf(float x) { return PF_LOG1PF(x); }
PF_FN float pf_expm1f(float x) { return PF_EXPM1F(x); }
PF_FN float pf_log2f(float x) { return PF_LOG2F(x); }
PF_FN float pf_log10f(float x) { return PF_LOG10F(x); }
PF_FN float pf_exp2f(float x) { return PF_EXP2F(x); }
PF_FN float pf_sigmoidf(float x) { return 1.0f / (1.0f + PF_EXPF(-x)); }
PF_FN float pf_siluf(float x) { return x / (1.0f + PF_EXPF(-x)); }
/* x * sqrt(1/2); sqrt(2/pi) and 0.044715 for the tanh form, each the nearest float */
PF_FN float pf_geluf(float x) { return 0.5f * x * (1.0f + PF_ERFF(x * 0x1.6a09e6p-1f)); }
PF_FN float pf_gelu_tanhf(float x) {
    return 0.5f * x * (1.0f + PF_TANHF(0x1.988454p-1f * (x + 0x1.6e4e26p-5f * x * x * x)));
}

PF_FN float pf_f16_to_f32(unsigned short h) {
    unsigned int sign = ((unsigned int)h & 0x8000u) << 16;
    unsigned int rest = (unsigned int)h & 0x7fffu;
    if (rest >= 0x7c00u) return PF_AS_FLOAT(sign | 0x7f800000u | ((rest & 0x3ffu) << 13));
    if (rest >= 0x0400u) return PF_AS_FLOAT(sign | ((rest << 13) + 0x38000000u));
    float mag = (float)rest * 0x1p-24f;          /* subnormal or zero: exact */
    return sign ? -mag : mag;
}
PF_FN unsigned short pf_f32_to_f16(float f) {   /* round to nearest even, as numpy */
    unsigned int x = PF_AS_UINT(f);
    unsigned int sign = (x >> 16) & 0x8000u;
    unsigned int a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return (unsigned short)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);
    if (a < 0x38800000u)   /* subnormal: adding 0.5f rounds to a multiple of 2^-24 */
        return (unsigned short)(sign | (PF_AS_UINT(PF_AS_FLOAT(a) + 0.5f) - 0x3f000000u));
    return (unsigned short)(sign | ((a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13));
}
PF_FN float pf_bf16_to_f32(unsigned short b) {
    return PF_AS_FLOAT((unsigned int)b << 16);
}
PF_FN unsigned short pf_f32_to_bf16(float f) {
    unsigned int x = PF_AS_UINT(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((x >> 16) | 0x40u);
    return (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
