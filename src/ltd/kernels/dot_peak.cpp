// How many multiply-adds a second this machine's threads do with the kernel's integer dot-product
// instructions, operands in registers: the arithmetic floor of a matmul on GGUF blocks. A tree of R
// rows cannot be verified faster than R x (the model's weights) / this rate, however the weights are
// streamed; `make bench-decode` prints that floor beside the measured verify curve.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define LTD_PEAK_AVX512 1
#elif defined(__AVX2__)
#include <immintrin.h>
#define LTD_PEAK_AVX2 1
#endif

namespace {

constexpr int kChains = 12;  // independent accumulators: enough to hide the instruction's latency

// One thread's multiply-adds over `rounds` rounds of kChains instructions.
int64_t spin(int64_t rounds) {
#if defined(LTD_PEAK_AVX512)
  __m512i acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_epi32(i);
  __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5);
  for (int64_t round = 0; round < rounds; ++round) {
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
    asm volatile("" : "+v"(a), "+v"(b));  // operands the compiler cannot hoist or fold
  }
  int32_t sink = 0;
  for (int i = 0; i < kChains; ++i) sink += _mm512_reduce_add_epi32(acc[i]);
  asm volatile("" : : "r"(sink));
  return rounds * kChains * 64;
#elif defined(LTD_PEAK_AVX2)
  // The AVX2 path's sequence for 32 products: vpmaddubsw, vpmaddwd by ones, vpaddd.
  __m256i acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_epi32(i);
  __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(5);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t round = 0; round < rounds; ++round) {
    for (int i = 0; i < kChains; ++i)
      acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
    asm volatile("" : "+x"(a), "+x"(b));
  }
  int32_t sink = 0;
  for (int i = 0; i < kChains; ++i) {
    alignas(32) int32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[i]);
    for (int l = 0; l < 8; ++l) sink += lanes[l];
  }
  asm volatile("" : : "r"(sink));
  return rounds * kChains * 32;
#else
  (void)rounds;
  return 0;
#endif
}

}  // namespace

// Multiply-adds a second over torch's threads together, each running `rounds` rounds at once
// (0 on the portable path, which has no dot-product instruction to measure).
double dot_peak(int64_t rounds) {
  const int threads = at::get_num_threads();
  std::vector<int64_t> done(threads, 0);
  const auto start = std::chrono::steady_clock::now();
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) done[t] = spin(rounds);
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int64_t total = 0;
  for (int64_t d : done) total += d;
  return static_cast<double>(total) / seconds;
}
