/* pf_rows.h -- whole-row moves for PowerFusion's C backend, written with the CPU's
 * vector instructions: streaming stores, and bfloat16 rounding in one instruction.
 * Included only by modules that use them (<immintrin.h> alone costs gcc about 0.1 s
 * to parse); after pf_math.h, whose scalar conversions they fall back on. */
#ifndef PF_ROWS_H
#define PF_ROWS_H

#include <stdint.h>

/* A row computed on chip, written past the caches.
 * Non-temporal stores skip the read-for-ownership a normal store of a line not in
 * cache costs (the line is fetched before it is overwritten): a third less DRAM
 * traffic for an output that is not read again soon. They need aligned addresses:
 * the ragged ends are plain stores. Each thread calls pf_stream_fence() before
 * others may read what it streamed. */
#if defined(__SSE2__) || defined(__AVX__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
static inline void pf_stream_f32(float *restrict dst, const float *restrict src, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i < n && ((uintptr_t)(dst + i) & 63); ++i) dst[i] = src[i];
    for (; i + 16 <= n; i += 16) _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
#elif defined(__AVX__)
    for (; i < n && ((uintptr_t)(dst + i) & 31); ++i) dst[i] = src[i];
    for (; i + 8 <= n; i += 8) _mm256_stream_ps(dst + i, _mm256_loadu_ps(src + i));
#elif defined(__SSE2__)
    for (; i < n && ((uintptr_t)(dst + i) & 15); ++i) dst[i] = src[i];
    for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
#endif
    for (; i < n; ++i) dst[i] = src[i];
}
static inline void pf_stream_fence(void) {
#if defined(__SSE2__) || defined(__AVX__) || defined(__AVX512F__)
    _mm_sfence();
#endif
}

/* f32 -> bf16 over a row, rounding to nearest even exactly as pf_f32_to_bf16 does.
 * With AVX512-BF16 one instruction converts 16 lanes; it flushes float32 subnormals
 * to zero where numpy rounds them, so a vector holding any takes the scalar path. */
static inline void pf_f32_to_bf16_row(uint16_t *restrict dst, const float *restrict src,
                                      int64_t n) {
    int64_t i = 0;
#if defined(__AVX512BF16__) && defined(__AVX512F__)
    const __m512i exponent = _mm512_set1_epi32(0x7f800000), mantissa = _mm512_set1_epi32(0x007fffff);
    for (; i + 16 <= n; i += 16) {
        __m512i bits = _mm512_castps_si512(_mm512_loadu_ps(src + i));
        __mmask16 subnormal = _mm512_testn_epi32_mask(bits, exponent)
                              & _mm512_test_epi32_mask(bits, mantissa);
        if (subnormal) {
            for (int k = 0; k < 16; ++k) dst[i + k] = pf_f32_to_bf16(src[i + k]);
        } else {
            _mm256_storeu_si256((__m256i *)(dst + i),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_castsi512_ps(bits)));
        }
    }
#endif
    for (; i < n; ++i) dst[i] = pf_f32_to_bf16(src[i]);
}

#endif /* PF_ROWS_H */
