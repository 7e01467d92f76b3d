/* pf_stream.h -- streaming stores for PowerFusion's C backend; included only by
 * modules that use them (<immintrin.h> alone costs gcc about 0.1 s to parse). */
#ifndef PF_STREAM_H
#define PF_STREAM_H

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

#endif /* PF_STREAM_H */
