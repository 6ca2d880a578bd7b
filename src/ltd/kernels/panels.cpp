// Q4_K weights in panels of 16 output rows, for AVX-512 VNNI and, where the CPU has it, AMX.
//
// Why panels: in gguf_linear.cpp's layout a SIMD lane holds a group of one output row, so every row
// of x pays, per output row and block, the float work of 16 groups (29 % of an 8-row call on the
// EPYC). Here a SIMD lane is an output row: 16 output rows' codes for one sub-block of 32 weights
// form an 8 x 64-byte tile, byte 4n + j of line k4 holding weight 4 k4 + j of output row n. Then
//   - one dot-product instruction applies 4 activations (broadcast) to 16 output rows, and a row of
//     x pays, per block, 8 conversions and 17 fused multiply-adds for 16 output rows (64 before);
//   - the same tile is an AMX B tile: `tdpbsud` takes the activations of up to 16 rows of x against
//     it in one instruction, so a tree's rows cost little more than one.
// Both engines compute, per row of x, sub-block and output row, the exact integer sum of codes times
// int8 activations, then the same float operations in the same order (`add_block`): which engine
// ran (chosen by the number of rows) never changes a bit, and a row's result depends on that row
// alone.
//
// Layout (made by `panel_q4_k` from gguf_linear.cpp's), per panel p and block b: codes 2048 bytes,
// 4 pairs of sub-blocks x 8 lines x 64 bytes, the low nibble sub-block 2t, the high 2t + 1; sub 256
// bytes: 8 x 16 scales (sub-block, output row), then 8 x 16 mins; d 2 x 16 fp16: d, then dmin.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <sys/mman.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define LTD_PANELS 1
#include <immintrin.h>
#if defined(__AMX_TILE__) && defined(__AMX_INT8__)
#define LTD_AMX 1
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

namespace {
constexpr int kBlock = 256, kPanel = 16, kPanelCodes = 2048, kPanelSub = 256;

// A tensor of 1 MB or more on 2 MB pages where Linux grants them: a step streams every weight once,
// and on 4 KB pages the TLB's misses cost about a tenth of it. (A smaller one, the scales, would
// waste most of a huge page.)
torch::Tensor huge_pages(std::vector<int64_t> shape, torch::ScalarType type) {
  constexpr size_t kHuge = 2 << 20;
  size_t bytes = c10::elementSize(type);
  for (int64_t s : shape) bytes *= s;
  if (bytes < kHuge / 2) return torch::empty(shape, type);
  const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
  void* data = std::aligned_alloc(kHuge, rounded);
  TORCH_CHECK(data != nullptr, "out of memory for ", bytes, " bytes of panels");
#if defined(MADV_HUGEPAGE)  // Linux's
  madvise(data, rounded, MADV_HUGEPAGE);
#endif
  return torch::from_blob(data, shape, [](void* p) { std::free(p); }, torch::TensorOptions().dtype(type));
}
}  // namespace

void q4_k_natural_codes(const uint8_t* codes, uint8_t* natural);  // gguf_linear.cpp

// gguf_linear.cpp's Q4_K blocks ([N, nb, 128] codes, [N, nb, 16] sub, [N, nb, 2] fp16 d; N a multiple
// of 16) as panels: codes [N/16, nb, 2048], sub [N/16, nb, 256], d [N/16, nb, 32] fp16.
std::vector<torch::Tensor> panel_q4_k(const torch::Tensor& codes, const torch::Tensor& sub, const torch::Tensor& d) {
  TORCH_CHECK(codes.dim() == 3 && codes.size(2) == 128 && codes.size(0) % kPanel == 0 && codes.is_contiguous() &&
                  sub.is_contiguous() && d.is_contiguous(), "Q4_K blocks of a multiple of 16 rows");
  const int64_t N = codes.size(0), nb = codes.size(1), P = N / kPanel;
  torch::Tensor pc = huge_pages({P, nb, kPanelCodes}, torch::kUInt8), ps = huge_pages({P, nb, kPanelSub}, torch::kUInt8),
                pd = huge_pages({P, nb, 2 * kPanel}, torch::kHalf);
  const uint8_t* c = codes.data_ptr<uint8_t>();
  const uint8_t* s = sub.data_ptr<uint8_t>();
  const int16_t* h = reinterpret_cast<const int16_t*>(d.data_ptr<at::Half>());
  uint8_t* oc = pc.data_ptr<uint8_t>();
  uint8_t* os = ps.data_ptr<uint8_t>();
  int16_t* oh = reinterpret_cast<int16_t*>(pd.data_ptr<at::Half>());
  at::parallel_for(0, P * nb, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t p = i / nb, b = i % nb;
      for (int n = 0; n < kPanel; ++n) {
        const int64_t at = (p * kPanel + n) * nb + b;
        uint8_t code[kBlock];
        q4_k_natural_codes(c + at * 128, code);
        for (int t = 0; t < 4; ++t)
          for (int k4 = 0; k4 < 8; ++k4)
            for (int j = 0; j < 4; ++j)
              oc[i * kPanelCodes + (8 * t + k4) * 64 + 4 * n + j] =
                  static_cast<uint8_t>(code[64 * t + 4 * k4 + j] | (code[64 * t + 32 + 4 * k4 + j] << 4));
        for (int k = 0; k < 16; ++k) os[i * kPanelSub + 16 * k + n] = s[at * 16 + k];
        oh[i * 2 * kPanel + n] = h[at * 2];
        oh[i * 2 * kPanel + kPanel + n] = h[at * 2 + 1];
      }
    }
  });
  return {pc, ps, pd};
}

#if defined(LTD_PANELS)
namespace {

struct Panels {
  const uint8_t* codes;
  const uint8_t* sub;
  const int16_t* d;
  int64_t nb;
};

struct Rows {  // the activations, in weight order
  const int8_t* q;          // [rows padded to 16, K]
  const float* scale;       // [R, nb]
  const float* sub_sums;    // [R, nb, 8]: the sum of each sub-block's q
  int64_t R, K;
};

// A block's a (d * scale) and b (dmin * min) for its 8 sub-blocks, 16 output rows each.
inline void block_scales(const Panels& w, int64_t at, __m512* a, __m512* b) {
  const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.d + at * 2 * kPanel)));
  const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.d + at * 2 * kPanel + kPanel)));
  const uint8_t* s = w.sub + at * kPanelSub;
  for (int k = 0; k < 8; ++k) {
    a[k] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16 * k)))));
    b[k] = _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                                   _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 128 + 16 * k)))));
  }
}


// The one float sequence of both engines: a row's 8 integer sums of a block (16 output rows each)
// into its accumulator.
inline __m512 add_block(const __m512i* sums, const __m512* a, const __m512* b, const float* sub_sums, float scale,
                        __m512 acc) {
  __m512 t = _mm512_setzero_ps();
  for (int k = 0; k < 8; ++k) {
    t = _mm512_fmadd_ps(a[k], _mm512_cvtepi32_ps(sums[k]), t);
    t = _mm512_fnmadd_ps(b[k], _mm512_set1_ps(sub_sums[k]), t);
  }
  return _mm512_fmadd_ps(t, _mm512_set1_ps(scale), acc);
}

// The blocks 6 ahead (~14 KB; 1, 2, 4 and 12 ran the same: the hardware prefetcher does most of it).
inline void prefetch(const Panels& w, int64_t at) {
  constexpr int64_t kAhead = 6;
  const char* c = reinterpret_cast<const char*>(w.codes + (at + kAhead) * kPanelCodes);
  for (int line = 0; line < kPanelCodes; line += 64) _mm_prefetch(c + line, _MM_HINT_T0);
  const char* s = reinterpret_cast<const char*>(w.sub + (at + kAhead) * kPanelSub);
  for (int line = 0; line < kPanelSub; line += 64) _mm_prefetch(s + line, _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(w.d + (at + kAhead) * 2 * kPanel), _MM_HINT_T0);
}

// VNNI: RT rows of x (from r0) at a time; each line of codes is unpacked once and met by every row
// of the tile.
template <int RT>
void vnni_tile(const Panels& w, const Rows& x, int64_t r0, int64_t p0, int64_t p1, float* out, int64_t N,
               int64_t column0) {
  const __m512i low = _mm512_set1_epi8(0x0F);
  for (int64_t p = p0; p < p1; ++p) {
    __m512 acc[RT];
    for (int r = 0; r < RT; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t blk = 0; blk < w.nb; ++blk) {
      const int64_t at = p * w.nb + blk;
      prefetch(w, at);
      const uint8_t* c = w.codes + at * kPanelCodes;
      __m512i sums[RT][8];
      for (int t = 0; t < 4; ++t) {
        __m512i sl[RT], sh[RT];
        for (int r = 0; r < RT; ++r) sl[r] = sh[r] = _mm512_setzero_si512();
        for (int k4 = 0; k4 < 8; ++k4) {
          const __m512i v = _mm512_loadu_si512(c + (8 * t + k4) * 64);
          const __m512i lo = _mm512_and_si512(v, low), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
          for (int r = 0; r < RT; ++r) {
            const int32_t* q = reinterpret_cast<const int32_t*>(x.q + (r0 + r) * x.K + blk * kBlock + 64 * t);
            sl[r] = _mm512_dpbusd_epi32(sl[r], lo, _mm512_set1_epi32(q[k4]));
            sh[r] = _mm512_dpbusd_epi32(sh[r], hi, _mm512_set1_epi32(q[8 + k4]));
          }
        }
        for (int r = 0; r < RT; ++r) sums[r][2 * t] = sl[r], sums[r][2 * t + 1] = sh[r];
      }
      __m512 a[8], b[8];
      block_scales(w, at, a, b);
      for (int r = 0; r < RT; ++r)
        acc[r] = add_block(sums[r], a, b, x.sub_sums + ((r0 + r) * w.nb + blk) * 8, x.scale[(r0 + r) * w.nb + blk],
                           acc[r]);
    }
    for (int r = 0; r < RT; ++r) _mm512_storeu_ps(out + (r0 + r) * N + column0 + kPanel * p, acc[r]);
  }
}

void panels_vnni(const Panels& w, const Rows& x, int64_t p0, int64_t p1, float* out, int64_t N, int64_t column0) {
  for (int64_t r0 = 0; r0 < x.R; r0 += 4) {
    switch (std::min<int64_t>(4, x.R - r0)) {
      case 1: vnni_tile<1>(w, x, r0, p0, p1, out, N, column0); break;
      case 2: vnni_tile<2>(w, x, r0, p0, p1, out, N, column0); break;
      case 3: vnni_tile<3>(w, x, r0, p0, p1, out, N, column0); break;
      default: vnni_tile<4>(w, x, r0, p0, p1, out, N, column0); break;
    }
  }
}

#if defined(LTD_AMX)
struct TileConfig {
  uint8_t palette = 1, start = 0;
  uint8_t reserved[14] = {0};
  uint16_t colsb[16] = {0};
  uint8_t rows[16] = {0};
};

// Tiles 0, 1: two sub-blocks of M rows of x (M x 32 bytes); 2, 3: their codes (8 x 64 bytes);
// 4, 5: the sums (M x 16 int32).
void configure(int M) {
  TileConfig config;
  for (int t = 0; t < 2; ++t) config.rows[t] = M, config.colsb[t] = 32;
  for (int t = 2; t < 4; ++t) config.rows[t] = 8, config.colsb[t] = 64;
  for (int t = 4; t < 6; ++t) config.rows[t] = M, config.colsb[t] = 64;
  _tile_loadconfig(&config);
}

// A block's codes as bytes, one 8 x 64-byte B tile per sub-block.
inline void unpack_block(const Panels& w, int64_t at, uint8_t (*codes)[8][64]) {
  const __m512i low = _mm512_set1_epi8(0x0F);
  const uint8_t* c = w.codes + at * kPanelCodes;
  for (int t = 0; t < 4; ++t)
    for (int k4 = 0; k4 < 8; ++k4) {
      const __m512i v = _mm512_loadu_si512(c + (8 * t + k4) * 64);
      _mm512_store_si512(codes[2 * t][k4], _mm512_and_si512(v, low));
      _mm512_store_si512(codes[2 * t + 1][k4], _mm512_and_si512(_mm512_srli_epi16(v, 4), low));
    }
}

// The 8 sub-blocks' integer sums of block `blk` for M rows of x (q: their first row): sums[k] is
// M x 16 int32.
inline void tile_sums(const int8_t* q, int64_t K, int64_t blk, uint8_t (*codes)[8][64], int32_t* sums) {
  q += blk * kBlock;
  for (int k = 0; k < 8; k += 2) {
    _tile_loadd(0, q + 32 * k, K);
    _tile_loadd(1, q + 32 * k + 32, K);
    _tile_loadd(2, codes[k], 64);
    _tile_loadd(3, codes[k + 1], 64);
    _tile_zero(4);
    _tile_zero(5);
    _tile_dpbsud(4, 0, 2);
    _tile_dpbsud(5, 1, 3);
    _tile_stored(4, sums + k * 256, 64);
    _tile_stored(5, sums + (k + 1) * 256, 64);
  }
}

// AMX, software-pipelined over the steps (block, chunk of up to 16 rows of x) of panels p0..p1: at
// each step the tiles sum one chunk of a block while the float work of the step before is done,
// from sums written a step earlier (double-buffered), so that no float load waits on the tile
// stores just made; a block's first step also unpacks the codes of the next block, which the tiles
// load a block later, and no tile load waits on the vector stores just made. On the 2-core Xeon
// this took 5-15 % off 6-16 rows of a 1536 x 17920 matrix against doing the three in order. A step
// is a chunk, not a block, so that the float work reads sums still in L1: a whole block's sums at
// 150 rows (a prompt) are 77 KB.
void panels_amx(const Panels& w, const Rows& x, int64_t p0, int64_t p1, float* out, int64_t N, int64_t column0) {
  const int M = static_cast<int>(std::min<int64_t>(x.R, 16));
  const int64_t chunks = (x.R + M - 1) / M;
  configure(M);
  alignas(64) uint8_t codes[2][8][8][64];
  alignas(64) int32_t sums[2][8][256];  // [step parity][sub-block][16 rows of x x 16 output rows]
  std::vector<__m512> acc(x.R, _mm512_setzero_ps());
  __m512 a[2][8], b[2][8];
  const int64_t i0 = p0 * w.nb, i1 = p1 * w.nb, steps = (i1 - i0) * chunks;
  unpack_block(w, i0, codes[0]);
  for (int64_t step = 0; step <= steps; ++step) {
    const int slot = static_cast<int>(step & 1);
    if (step < steps) {
      const int64_t i = i0 + step / chunks, chunk = step % chunks;
      const int parity = static_cast<int>((i - i0) & 1);
      if (chunk == 0) prefetch(w, i);
      tile_sums(x.q + chunk * M * x.K, x.K, i % w.nb, codes[parity], &sums[slot][0][0]);
      if (chunk == 0) {
        if (i + 1 < i1) unpack_block(w, i + 1, codes[parity ^ 1]);
        block_scales(w, i, a[parity], b[parity]);
      }
    }
    if (step == 0) continue;
    const int64_t i = i0 + (step - 1) / chunks, chunk = (step - 1) % chunks, blk = i % w.nb;
    const int parity = static_cast<int>((i - i0) & 1);
    for (int64_t r = chunk * M; r < std::min<int64_t>(x.R, chunk * M + M); ++r) {
      __m512i row[8];
      for (int k = 0; k < 8; ++k) row[k] = _mm512_load_si512(&sums[slot ^ 1][k][(r - chunk * M) * 16]);
      acc[r] = add_block(row, a[parity], b[parity], x.sub_sums + (r * w.nb + blk) * 8, x.scale[r * w.nb + blk], acc[r]);
    }
    if (blk < w.nb - 1 || chunk < chunks - 1) continue;
    for (int64_t r = 0; r < x.R; ++r) {
      _mm512_storeu_ps(out + r * N + column0 + kPanel * (i / w.nb), acc[r]);
      acc[r] = _mm512_setzero_ps();
    }
  }
  _tile_release();
}

// Linux hands out AMX's tile state only to a process that asks (arch_prctl ARCH_REQ_XCOMP_PERM for
// XTILEDATA); where it says no, the VNNI engine does the same sums.
bool amx_granted() {
  static const bool granted = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  return granted;
}
#endif

}  // namespace
#endif

// Whether panels can run here, and with AMX.
bool panels_built() {
#if defined(LTD_PANELS)
  return true;
#else
  return false;
#endif
}

bool panels_amx() {
#if defined(LTD_AMX)
  return amx_granted();
#else
  return false;
#endif
}

// Panels p0..p1 of one weight (codes/sub/d as panel_q4_k makes them, nb blocks a row) against the
// rows of x, written to out's columns column0 + 16 p. AMX from `amx_rows` rows of x on (0: never).
void panel_rows(const uint8_t* codes, const uint8_t* sub, const int16_t* d, int64_t nb, const int8_t* q,
                const float* scale, const float* sub_sums, int64_t R, int64_t K, int64_t p0, int64_t p1, float* out,
                int64_t N, int64_t column0, int64_t amx_rows) {
#if defined(LTD_PANELS)
  const Panels w{codes, sub, d, nb};
  const Rows x{q, scale, sub_sums, R, K};
#if defined(LTD_AMX)
  if (amx_rows > 0 && R >= amx_rows && amx_granted()) return panels_amx(w, x, p0, p1, out, N, column0);
#endif
  panels_vnni(w, x, p0, p1, out, N, column0);
#else
  TORCH_CHECK(false, "Q4_K panels need AVX-512 VNNI");
#endif
}
