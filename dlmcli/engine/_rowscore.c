/* Row reductions of the denoising engine's hot loop, in C.

   For each selected logits row (optionally classifier-free-guided) this computes the argmax and a
   score: the argmax's softmax probability, the top1-top2 probability margin, or Dream's entropy
   score sum(p * log(p + 1e-10)). It is the arithmetic of scoring._greedy_part_numpy (float32
   exponentials, float64 sums) with one read of each row from main memory instead of five passes
   over copies, and exp/log as vectorisable polynomials instead of libm calls; except that a row's
   softmax sum z (confidence, margin, top-p's target) adds float32 partials of 128 terms (8 per
   lane) in float64. A float64 add per term cost 1.09 ns a logit in the exp-and-sum pass, the
   partials 0.85 (AVX2 EPYC, one thread); as the terms share a sign, the partials' 7 float32
   roundings stay under 4.2e-7 of the sum (under 4e-8 measured on Dream-width rows). The entropy's
   divisor and sum, and a kept set's sums, stay a term at a time in float64 (row_sumexp says why).

   No FMA contraction and no reassociation (-ffp-contract=off, no -ffast-math; fixed lane and block
   order), so every build and every instruction set gives the same bits, whatever the threads. Rows
   are split over OpenMP threads when built with it: llama.cpp's CPU backend uses the same libgomp,
   so its workers, still spinning after the forward pass, take the rows instead of competing for the
   cores with threads of our own. The GIL is released while rows are reduced. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
/* One clone per instruction set, chosen at load time: the package stays portable. */
#define MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))  /* ifunc: glibc only */
#else
#define MULTIVERSION
#endif
/* Inlined into each clone of its caller, so it runs that clone's instruction set. */
#define INLINE static inline __attribute__((always_inline))

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0
/* x87 arithmetic (32-bit x86 without SSE) keeps excess precision, which defeats the rounding trick
   in exp_neg: refuse to build, and dlm uses its numpy path. */
#error "the scoring kernel needs float arithmetic without excess precision"
#endif

#define LANES 16
#define BLOCK_STEPS 8                   /* LANES-wide steps a lane sums in float32 ... */
#define BLOCK (BLOCK_STEPS * LANES)     /* ... before it adds that partial to its float64 lane */
#define MODE_CONF 0
#define MODE_MARGIN 1
#define MODE_ENTROPY 2

static inline float bits_to_float(int32_t i) {
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

static inline int32_t float_to_bits(float f) {
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return i;
}

/* exp(x) for x <= 0 (x - rowmax), Cephes' single-precision polynomial (about 1 ulp). Below -87 it
   returns 0 (the exact value is under 1.7e-38: nothing beside a softmax sum of at least 1). NaN
   stays NaN. */
static inline float exp_neg(float x) {
    const int below = x < -87.0f; /* 0 there: no denormals (a sum of at least 1 cannot see them) */
    x = below ? -87.0f : x;
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float kf = x * 1.44269504088896341f + shifter;
    int32_t n = float_to_bits(kf) - 0x4B400000;
    kf = kf - shifter;
    float r = x - kf * 0.693359375f;
    r = r - kf * -2.12194440e-4f;
    float y = 1.9875691500E-4f;
    y = y * r + 1.3981999507E-3f;
    y = y * r + 8.3334519073E-3f;
    y = y * r + 4.1665795894E-2f;
    y = y * r + 1.6666665459E-1f;
    y = y * r + 5.0000001201E-1f;
    y = y * (r * r) + r + 1.0f;
    return below ? 0.0f : y * bits_to_float((int32_t)((uint32_t)(n + 127) << 23)); /* (unsigned: NaN's n overflows) */
}

/* log(x) for normal x > 0, Cephes' single-precision polynomial (about 1 ulp). */
static inline float log_pos(float x) {
    int32_t b = float_to_bits(x);
    int32_t e = ((b >> 23) & 0xff) - 126;
    float m = bits_to_float((b & 0x007fffff) | 0x3f000000); /* mantissa in [0.5, 1) */
    float small = m < 0.707106781186547524f ? 1.0f : 0.0f;   /* then use 2m, e - 1 */
    float ef = (float)e - small;
    m = m + m * small - 1.0f;
    float z = m * m;
    float y = 7.0376836292E-2f;
    y = y * m - 1.1514610310E-1f;
    y = y * m + 1.1676998740E-1f;
    y = y * m - 1.2420140846E-1f;
    y = y * m + 1.4249322787E-1f;
    y = y * m - 1.6668057665E-1f;
    y = y * m + 2.0000714765E-1f;
    y = y * m - 2.4999993993E-1f;
    y = y * m + 3.3333331174E-1f;
    y = y * m * z;
    y = y + ef * -2.12194440e-4f;
    y = y - 0.5f * z;
    return m + y + ef * 0.693359375f;
}

static double lane_sum(const double *acc) {
    double s = 0.0;
    for (int l = 0; l < LANES; l++) s += acc[l];
    return s;
}

/* Sums of exp((x - top) * s), terms stored in t[] when store, lane maxima of x in m[] unless NULL:
   exp_block a block of BLOCK at x[j], its float32 lane partials then added to acc; exp_lanes one
   LANES-wide step straight into acc (after the blocks); exp_sum a row. Every such sum is an
   exp_sum, and top_p_prefix gathers inside its loops (g), so its z is row_terms' to the bit.
   (x - top) * 1.0f is x - top exactly. */
typedef struct prefix prefix_t; /* top_p_prefix's gathering, with the sampling code below */
INLINE int prefix_take(prefix_t *g, const float *x, Py_ssize_t j, Py_ssize_t end);

INLINE void exp_block(const float *x, Py_ssize_t j, float top, float s, float *t, int store, double *acc,
                      float *m, const float *pf) {
    float part[LANES] = {0};
    for (int k = 0; k < BLOCK; k += LANES) {
        if (pf) __builtin_prefetch(pf + j + k, 0, 2); /* a line of the next row per line of this one */
        for (int l = 0; l < LANES; l++) {
            const float e = exp_neg((x[j + k + l] - top) * s);
            if (store) t[j + k + l] = e;
            if (m) m[l] = x[j + k + l] > m[l] ? x[j + k + l] : m[l];
            part[l] += e;
        }
    }
    for (int l = 0; l < LANES; l++) acc[l] += (double)part[l];
}

INLINE void exp_lanes(const float *x, Py_ssize_t j, float top, float s, float *t, int store, double *acc,
                      float *m, const float *pf) {
    if (pf) __builtin_prefetch(pf + j, 0, 2);
    for (int l = 0; l < LANES; l++) {
        const float e = exp_neg((x[j + l] - top) * s);
        if (store) t[j + l] = e;
        if (m) m[l] = x[j + l] > m[l] ? x[j + l] : m[l];
        acc[l] += (double)e;
    }
}

/* The tail (V % LANES terms) only sums: m covers x[0..V - V % LANES). */
INLINE double exp_sum(const float *x, Py_ssize_t V, float top, float s, float *t, int store, float *m,
                      prefix_t *g, const float *pf) {
    double acc[LANES] = {0};
    Py_ssize_t j = 0;
    for (; j + BLOCK <= V; j += BLOCK) {
        exp_block(x, j, top, s, t, store, acc, m, pf);
        if (g && prefix_take(g, x, j, j + BLOCK)) return NAN; /* NaN: given up */
    }
    for (; j + LANES <= V; j += LANES) {
        exp_lanes(x, j, top, s, t, store, acc, m, pf);
        if (g && prefix_take(g, x, j, j + LANES)) return NAN;
    }
    if (g && prefix_take(g, x, j, V)) return NAN;
    double z = lane_sum(acc);
    for (; j < V; j++) {
        const float e = exp_neg((x[j] - top) * s);
        if (store) t[j] = e;
        z += (double)e;
    }
    return z;
}


/* 4-float vectors (SSE's and NEON's width, native in every clone): GCC turned the plain-C lane
   loops of row_argmax into a scalar maxss per lane and a branch per compare, in every clone, and
   the max pass cost as much as the exp pass (0.63 ns a logit on an AVX2 EPYC; 0.17 with these). */
#if defined(__GNUC__)
#define VEC4 1
typedef float f4 __attribute__((vector_size(16)));
typedef int32_t i4 __attribute__((vector_size(16)));
INLINE f4 f4_load(const float *p) {
    f4 v;
    memcpy(&v, p, sizeof v);
    return v;
}
/* x where x > m, else m: NaN x never enters (as the scalar form) */
INLINE f4 f4_max(f4 x, f4 m) {
    const i4 k = x > m;
    return (f4)(((i4)x & k) | ((i4)m & ~k));
}
/* whether any of x[0..LANES) equals b / is above b (NaN never is) */
INLINE int any_equal(const float *x, float b) {
    const f4 bv = {b, b, b, b};
    i4 h = f4_load(x) == bv;
    for (int v = 4; v < LANES; v += 4) h |= f4_load(x + v) == bv;
    return (h[0] | h[1] | h[2] | h[3]) != 0;
}
INLINE int any_above(const float *x, float b) {
    const f4 bv = {b, b, b, b};
    i4 h = f4_load(x) > bv;
    for (int v = 4; v < LANES; v += 4) h |= f4_load(x + v) > bv;
    return (h[0] | h[1] | h[2] | h[3]) != 0;
}
#else
INLINE int any_equal(const float *x, float b) {
    int h = 0;
    for (int l = 0; l < LANES; l++) h |= x[l] == b;
    return h;
}
INLINE int any_above(const float *x, float b) {
    int h = 0;
    for (int l = 0; l < LANES; l++) h |= x[l] > b;
    return h;
}
#endif

/* Largest value of x[a..b) and the first index holding it (NaN ignored; -inf and a when none).
   Two reads: the maximum lane-wise, then the first index holding it, found a step at a time (on
   average half the row, from the cache). Lane l holds the x[i] with i - a = l mod LANES. */
static inline __attribute__((always_inline)) float row_argmax(const float *x, Py_ssize_t a, Py_ssize_t b, Py_ssize_t *arg) {
    float m[LANES];
    Py_ssize_t j = a;
#ifdef VEC4
    f4 mv[LANES / 4];
    for (int v = 0; v < LANES / 4; v++) mv[v] = (f4){-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    for (; j + LANES <= b; j += LANES)
        for (int v = 0; v < LANES / 4; v++) mv[v] = f4_max(f4_load(x + j + 4 * v), mv[v]);
    memcpy(m, mv, sizeof m);
#else
    for (int l = 0; l < LANES; l++) m[l] = -INFINITY;
    for (; j + LANES <= b; j += LANES)
        for (int l = 0; l < LANES; l++) m[l] = x[j + l] > m[l] ? x[j + l] : m[l];
#endif
    float best = -INFINITY;
    for (int l = 0; l < LANES; l++) best = m[l] > best ? m[l] : best;
    for (Py_ssize_t i = j; i < b; i++) best = x[i] > best ? x[i] : best;
    *arg = a;
    if (best == -INFINITY) return best; /* all -inf or NaN: index a, as numpy's argmax of -inf rows */
    for (j = a; j + LANES <= b; j += LANES)
        if (any_equal(x + j, best)) break;
    for (; j < b; j++)
        if (x[j] == best) {
            *arg = j;
            break;
        }
    return best;
}

/* sum of exp(x - top); with e (the entropy), the float32 terms stored there and summed a term at a
   time in float64, as numpy sums them: the entropy rounds z to float32 for p = e / z, and near p = 1
   a one-ulp move of that float (which exp_sum's 128-term float partials cause often) moves the
   score by up to 4e-5 of itself. Two loops, the terms then their sum: in one, GCC applied exp_neg's
   zero below -87 after the conversion to float64, on both halves (1.12 ns a logit against 0.85 for
   the two, AVX2 EPYC; the same bits). */
INLINE double row_sumexp(const float *x, Py_ssize_t V, float top, float *e, const float *pf) {
    if (!e) return exp_sum(x, V, top, 1.0f, NULL, 0, NULL, NULL, pf);
    Py_ssize_t j = 0;
    for (; j + LANES <= V; j += LANES) {
        if (pf) __builtin_prefetch(pf + j, 0, 2);
        for (int l = 0; l < LANES; l++) e[j + l] = exp_neg(x[j + l] - top);
    }
    for (; j < V; j++) e[j] = exp_neg(x[j] - top);
    double acc[LANES] = {0};
    for (j = 0; j + LANES <= V; j += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += (double)e[j + l];
    double z = lane_sum(acc);
    for (; j < V; j++) z += (double)e[j];
    return z;
}

/* row_sumexp without terms, plus the largest value at an index other than arg (-inf when none):
   the margin's runner-up costs a max per lane in the read the sum already makes. */
INLINE double row_sumexp_second(const float *x, Py_ssize_t V, float top, Py_ssize_t arg, float *second,
                                const float *pf) {
    float m[LANES];
    for (int l = 0; l < LANES; l++) m[l] = -INFINITY;
    const double s = exp_sum(x, V, top, 1.0f, NULL, 0, m, NULL, pf);
    const Py_ssize_t body = V - V % LANES; /* m's part: x[i] in lane i % LANES */
    float sec = -INFINITY;
    const int arg_lane = arg < body ? (int)(arg % LANES) : -1;
    for (int l = 0; l < LANES; l++)
        if (l != arg_lane && m[l] > sec) sec = m[l];
    if (arg_lane >= 0) /* the argmax's lane again, without it (1/16 of the row, in cache) */
        for (Py_ssize_t i = arg_lane; i < body; i += LANES)
            if (i != arg && x[i] > sec) sec = x[i];
    for (Py_ssize_t j = body; j < V; j++)
        if (j != arg && x[j] > sec) sec = x[j];
    *second = sec;
    return s;
}

/* Dream's score: sum over the row of p * log(p + 1e-10), p = e / z in float32; summed a term at a
   time in float64 like its divisor (float32 partials would make the short and general top-p paths,
   which group the kept terms differently, disagree in the eighth digit). */
INLINE double row_entropy(const float *e, Py_ssize_t V, float zf) {
    double acc[LANES] = {0};
    Py_ssize_t j = 0;
    for (; j + LANES <= V; j += LANES)
        for (int l = 0; l < LANES; l++) {
            float p = e[j + l] / zf;
            acc[l] += (double)(p * log_pos(p + 1e-10f));
        }
    double s = lane_sum(acc);
    for (; j < V; j++) {
        float p = e[j] / zf;
        s += (double)(p * log_pos(p + 1e-10f));
    }
    return s;
}

/* The row to prefetch while this one's exp pass computes: without it every thread read its row
   from memory and then computed with the memory bus idle, in step with the others. */
#ifdef DLM_NO_PREFETCH
#define NEXT_ROW(logits, index, r, V) ((const float *)NULL) /* (to measure what the prefetch gives) */
#else
#define NEXT_ROW(logits, index, r, V) ((logits) + (index)[r] * (V))
#endif

/* after: the row this thread will likely take after the last of these n (prefetched), or NULL. */
MULTIVERSION
static void score_rows(const float *logits, const float *uncond, float scale, Py_ssize_t V,
                       const int64_t *index, Py_ssize_t n, int mode, float *work, int64_t *out_idx,
                       double *out_val, const float *after) {
    float *guided = work;    /* V floats: the CFG-combined row */
    float *terms = work ? work + V : NULL; /* V floats: exp terms, for the entropy score */
    for (Py_ssize_t r = 0; r < n; r++) {
        const float *x = logits + index[r] * V;
        const float *next = r + 1 < n ? NEXT_ROW(logits, index, r + 1, V) : after;
        if (uncond) {
            const float *u = uncond + index[r] * V;
            for (Py_ssize_t j = 0; j < V; j++) guided[j] = (x[j] - u[j]) * scale + u[j];
            x = guided;
        }
        Py_ssize_t arg;
        float second = -INFINITY;
        float top = row_argmax(x, 0, V, &arg);
        /* margin: the runner-up found in the sum's read, not in two more passes */
        double z = mode == MODE_MARGIN ? row_sumexp_second(x, V, top, arg, &second, next)
                                       : row_sumexp(x, V, top, mode == MODE_ENTROPY ? terms : NULL, next);
        out_idx[r] = arg;
        if (mode == MODE_MARGIN) {
            if (V == 1) second = top;
            out_val[r] = 1.0 / z - exp((double)(second - top)) / z;
        } else if (mode == MODE_ENTROPY) {
            out_val[r] = row_entropy(terms, V, (float)z);
        } else {
            out_val[r] = 1.0 / z;
        }
        if (isnan(z)) {
            out_val[r] = NAN;
            for (Py_ssize_t j = 0; j < V; j++)
                if (isnan(x[j])) { /* numpy's argmax: the first NaN */
                    out_idx[r] = j;
                    break;
                }
        }
    }
}

/* Rows over n_threads threads (dynamic: rows cost the same, threads may not; a thread's next row
   is then likely n_threads further). work: n_threads buffers of 2 * V floats. */
static void score_all(const float *logits, const float *uncond, float scale, Py_ssize_t V,
                      const int64_t *index, Py_ssize_t n, int mode, float *work, int n_threads,
                      int64_t *out_idx, double *out_val) {
#ifdef _OPENMP
    if (n_threads > 1 && n > 1) {
        if (n_threads > n) n_threads = (int)n;
#pragma omp parallel num_threads(n_threads)
        {
            float *mine = work ? work + (size_t)omp_get_thread_num() * 2 * (size_t)V : NULL;
#pragma omp for schedule(dynamic, 1)
            for (Py_ssize_t r = 0; r < n; r++)
                score_rows(logits, uncond, scale, V, index + r, 1, mode, mine, out_idx + r, out_val + r,
                           r + n_threads < n ? NEXT_ROW(logits, index, r + n_threads, V) : NULL);
        }
        return;
    }
#endif
    score_rows(logits, uncond, scale, V, index, n, mode, work, out_idx, out_val, NULL);
}

/* ---- Sampling with temperature and top-p / top-k (scoring.sample's rows) -------------------------

   The distribution is scoring.filter_logits' (Dream's order: top-p, then top-k; the token that
   crosses p is kept; ties ordered by index, as a stable sort does) over softmax(x / T), found
   without sorting the row. Two paths: when the kept set is small (top_p_prefix: most rows of a
   trained model, and Dream's T 0.2), one read gathers the row's best tokens and only they are
   sorted; otherwise a histogram of top - x in equal buckets (terms fall with x, so a bucket is a
   slice of the sorted order) tells which bucket holds the token that crosses p or the k-th token,
   and only that bucket's tokens are selected. Masses are float32 terms summed in float64 (the row's
   total from float32 partials of 128, as at the top), so the kept set is the float64 definition's
   except when the cumulative probability at the crossing lies within about 4e-7 of top_p at worst
   (4e-8 measured; an exact tie with top_p, as 3 of 10 equal logits at top_p 0.3, can fall either way). A
   token is drawn by inverse CDF in vocabulary order with one uniform per row (given by the caller,
   from the sequence's own generator): the same distribution as the authors' Gumbel-max or
   torch.multinomial draws, one random number per row instead of one per logit. */

typedef struct {
    float x;
    int32_t j;
} pair_t;

/* x descending, then index ascending: numpy's stable argsort of -x (a total order). */
static inline int before(const pair_t *p, const pair_t *q) {
    return (p->x > q->x) | ((p->x == q->x) & (p->j < q->j)); /* (no branches: the partition's test) */
}

static int pair_cmp(const void *a, const void *b) {
    const pair_t *p = (const pair_t *)a, *q = (const pair_t *)b;
    return before(p, q) ? -1 : before(q, p) ? 1 : 0;
}

static int int32_cmp(const void *a, const void *b) {
    const int32_t p = *(const int32_t *)a, q = *(const int32_t *)b;
    return (p > q) - (p < q);
}

static inline void pair_swap(pair_t *a, Py_ssize_t i, Py_ssize_t k) {
    pair_t t = a[i];
    a[i] = a[k];
    a[k] = t;
}

/* One quickselect step on a[lo..hi) (hi - lo >= 3): returns p with a[lo..p) before a[p], the rest after. */
static Py_ssize_t partition(pair_t *a, Py_ssize_t lo, Py_ssize_t hi) {
    Py_ssize_t mid = lo + (hi - lo) / 2, last = hi - 1;
    if (before(&a[mid], &a[lo])) pair_swap(a, mid, lo);
    if (before(&a[last], &a[lo])) pair_swap(a, last, lo);
    if (before(&a[mid], &a[last])) pair_swap(a, mid, last); /* median of three now at last */
    const pair_t piv = a[last];
    Py_ssize_t s = lo;
    for (Py_ssize_t i = lo; i < last; i++) { /* branch-free: a branch here mispredicted half the time */
        const pair_t t = a[i];
        a[i] = a[s];
        a[s] = t;
        s += before(&t, &piv);
    }
    pair_swap(a, s, last);
    return s;
}

/* Reorder a[0..n) so that a[k] is the k-th in order, the ones before it before it (nth_element). */
/* Partition steps before a selection sorts what is left: median-of-three can be led to quadratic
   time by crafted rows (an organ-pipe row took seconds); the sort bounds it at n log n. */
#define MAX_PARTITIONS 64

static void select_rank(pair_t *a, Py_ssize_t n, Py_ssize_t k) {
    Py_ssize_t lo = 0, hi = n;
    for (int steps = 0; hi - lo > 16 && steps < MAX_PARTITIONS; steps++) {
        Py_ssize_t p = partition(a, lo, hi);
        if (p == k) return;
        if (k < p) hi = p;
        else lo = p + 1;
    }
    qsort(a + lo, (size_t)(hi - lo), sizeof(pair_t), pair_cmp);
}

/* Top-p over a band that follows `head` (mass, tokens) of surely kept tokens: the number of band
   tokens kept, in order, while the mass before them is <= target (the first token overall always).
   a[0..result) are then those tokens, and a[result - 1] the last of them in order. */
static Py_ssize_t select_mass(pair_t *a, Py_ssize_t n, const float *terms, double head, int64_t n_head,
                              double target) {
    Py_ssize_t lo = 0, hi = n;
    double base = head; /* mass of the tokens before a[lo] */
    for (int steps = 0; hi - lo > 16 && steps < MAX_PARTITIONS; steps++) {
        Py_ssize_t p = partition(a, lo, hi);
        double m = base;
        for (Py_ssize_t i = lo; i < p; i++) m += (double)terms[a[i].j];
        if ((p > 0 || n_head > 0) && m > target) {
            hi = p; /* the crossing is a[p] or before */
        } else {
            lo = p + 1;
            base = m + (double)terms[a[p].j];
        }
    }
    qsort(a + lo, (size_t)(hi - lo), sizeof(pair_t), pair_cmp);
    Py_ssize_t r = lo;
    double cum = base;
    while (r < hi && !((r > 0 || n_head > 0) && cum > target)) cum += (double)terms[a[r++].j];
    return r;
}

#define NLIN 4096 /* the general top-p path's buckets of top - x */

/* Bucket of top - x (x <= top): NLIN equal steps over the x where exp((x - top) * s) > 0, then one
   for the rest (-inf included). Monotone: a larger x never lands in a later bucket. */
static inline int lin_bucket(float x, float top, float inv_w) {
    const float d = (top - x) * inv_w;
    return d < (float)(NLIN - 1) ? (int)d : NLIN - 1;
}

/* terms[j] = exp((x[j] - top) * s) in float32; returns their sum (exp_sum's). */
MULTIVERSION
static double row_terms(const float *x, Py_ssize_t V, float top, float s, float *terms) {
    return exp_sum(x, V, top, s, terms, 1, NULL, NULL, NULL);
}

typedef struct {
    double temperature; /* 0: argmax */
    int64_t top_k;      /* 0 or >= V: off */
    double top_p;       /* >= 1: off */
    int raw;            /* 1: LLaDA's convention (score from the untempered, unfiltered softmax) */
    int mode;
} sample_params;

typedef struct {
    float *guided, *terms, *raw_terms, *kept_e;
    int32_t *cand;
    pair_t *band;
    int32_t *hcnt;
    double *hmass;
    uint16_t *bucket;
} sample_work;

/* sample()'s flags, for the tests and benchmarks that compare the two top-p paths: NO_PREFIX takes
   the general path for every row; ONLY_PREFIX gives index -1 to the rows top_p_prefix cannot do. */
#define NO_PREFIX 1
#define ONLY_PREFIX 2

/* The untempered, unfiltered score of token tok (LLaDA's convention), like score_rows; amax and
   top: the row's argmax and its value, already known. */
MULTIVERSION
static double raw_score(const float *x, Py_ssize_t V, int mode, Py_ssize_t tok, Py_ssize_t amax, float top,
                        float *terms) {
    Py_ssize_t unused;
    double z = row_sumexp(x, V, top, mode == MODE_ENTROPY ? terms : NULL, NULL);
    if (mode == MODE_MARGIN) {
        float second = -INFINITY; /* V 1: margin 1, as the numpy path scores it */
        if (V > 1) {
            float before = amax > 0 ? row_argmax(x, 0, amax, &unused) : -INFINITY;
            float after = amax + 1 < V ? row_argmax(x, amax + 1, V, &unused) : -INFINITY;
            second = after > before ? after : before;
        }
        return 1.0 / z - exp((double)(second - top)) / z;
    }
    if (mode == MODE_ENTROPY) return row_entropy(terms, V, (float)z);
    return (double)exp_neg(x[tok] - top) / z;
}

/* The end of every sampled row: the kept tokens in vocabulary order (ids, with their terms e; ids
   NULL: the whole row, token r at r), their total, the draw (inverse CDF with u; at temperature 0
   the argmax) and the score. */
MULTIVERSION
static void finish_kept(const float *x, Py_ssize_t V, const sample_params *sp, double u, Py_ssize_t amax, float top,
                        const int32_t *ids, const float *e, Py_ssize_t nk, float *raw_terms, int64_t *out_idx,
                        double *out_val) {
#define ID(r) (ids ? (Py_ssize_t)ids[r] : (Py_ssize_t)(r))
    /* zk a term at a time in float64 (as row_sumexp's), not in float32 partials: it is the entropy's
       divisor, and the short path (kept tokens gathered) and the general path (the whole row, the
       rest 0) must agree on it, which partials over differently grouped terms would not. */
    double acc[LANES] = {0};
    float sec[LANES];
    for (int l = 0; l < LANES; l++) sec[l] = 0.0f;
    Py_ssize_t r = 0;
    for (; r + LANES <= nk; r += LANES)
        for (int l = 0; l < LANES; l++) {
            acc[l] += (double)e[r + l];
            sec[l] = (ID(r + l) != amax && e[r + l] > sec[l]) ? e[r + l] : sec[l];
        }
    double zk = lane_sum(acc);
    float second = 0.0f;
    for (int l = 0; l < LANES; l++) second = sec[l] > second ? sec[l] : second;
    for (; r < nk; r++) {
        zk += (double)e[r];
        second = (ID(r) != amax && e[r] > second) ? e[r] : second;
    }
    Py_ssize_t tok = amax;
    float e_tok = 1.0f; /* the argmax's term: exp(0) */
    if (sp->temperature > 0) { /* inverse CDF in vocabulary order, skipping blocks whose sum stays below */
        const double target = u * zk;
        double cum = 0.0;
        Py_ssize_t last = -1; /* start of the last block with any mass */
        int crossed = 0;
        for (Py_ssize_t a = 0; a < nk; a += 256) {
            const Py_ssize_t b = a + 256 < nk ? a + 256 : nk;
            double bs = 0.0;
            for (Py_ssize_t i = a; i < b; i++) bs += (double)e[i];
            last = bs > 0 ? a : last;
            if (cum + bs <= target && b < nk) {
                cum += bs;
                continue;
            }
            for (Py_ssize_t i = a; i < b && !crossed; i++) {
                cum += (double)e[i];
                if (cum > target) {
                    tok = ID(i);
                    e_tok = e[i];
                    crossed = 1;
                }
            }
            break;
        }
        if (!crossed && last >= 0) /* rounding left the sum at the target: the last token with any mass */
            for (Py_ssize_t i = (last + 256 < nk ? last + 256 : nk) - 1; i >= last; i--)
                if (e[i] > 0) {
                    tok = ID(i);
                    e_tok = e[i];
                    break;
                }
    }
#undef ID
    double val;
    if (sp->raw) {
        val = raw_score(x, V, sp->mode, tok, amax, top, raw_terms);
    } else if (sp->mode == MODE_MARGIN) {
        val = (1.0 - (double)second) / zk;
    } else if (sp->mode == MODE_ENTROPY) {
        val = row_entropy(e, nk, (float)zk);
    } else {
        val = (double)e_tok / zk;
    }
    *out_idx = tok;
    *out_val = val;
}

/* Top-p without the row's terms or histogram, for rows whose kept set is small (every sampled row of
   a trained model at Dream's T 0.2, most at T 1): one read computes z (row_terms' sum, the same
   bits) and gathers the tokens that can be kept into a[0..cap), a prefix of the row's sorted order
   (x descending, then index): every x above a floor while there is room; when full, the better half
   stays and the floor rises to its last, so later ties (higher indices) stay out. If the crossing of
   p lies in that prefix the kept set is exactly the general path's; else 0 (the caller takes it). */
#define CAND_CAP 2048
struct prefix {
    pair_t *a; /* CAND_CAP slots */
    Py_ssize_t n;
    float floor_x;
    int prunes;
    int small_k; /* a top-k under CAND_CAP / 2: never give up, the k best stay in the prefix */
    Py_ssize_t keep; /* slots a prune keeps: CAND_CAP / 2, or twice a small top-k (the floor then
                        rises to about the k-th best at once, and a flat row needs one prune, not five) */
};

/* Gathers the x[j..end) above the floor (a block, a step or the tail from exp_sum), LANES at a
   time; 1: gives up on a flat row (thousands near the top), which the general path does. */
INLINE int prefix_take(prefix_t *g, const float *x, Py_ssize_t j, Py_ssize_t end) {
    int hit = 0;
    Py_ssize_t i = j;
    for (; i + LANES <= end && !hit; i += LANES) hit = any_above(x + i, g->floor_x);
    for (; i < end && !hit; i++) hit = x[i] > g->floor_x;
    if (!hit) return 0; /* the floor only rises: nothing here passes it later */
    pair_t *a = g->a;
    Py_ssize_t n = g->n;
    float floor_x = g->floor_x;
    for (; j < end; j += LANES) {
        const int len = end - j < LANES ? (int)(end - j) : LANES;
        if (len == LANES) { /* (a constant count, unrolled) */
            if (!any_above(x + j, floor_x)) continue; /* a block with a hit mostly has one: gather its step */
            for (int l = 0; l < LANES; l++) { /* branch-free: only a slot's count moves */
                a[n].x = x[j + l];
                a[n].j = (int32_t)(j + l);
                n += x[j + l] > floor_x;
            }
        } else {
            for (int l = 0; l < len; l++) {
                a[n].x = x[j + l];
                a[n].j = (int32_t)(j + l);
                n += x[j + l] > floor_x;
            }
        }
        if (n > CAND_CAP - LANES) { /* (so the next LANES always fit) */
            if (++g->prunes > 4 && !g->small_k) return 1;
            select_rank(a, n, g->keep - 1);
            n = g->keep;
            floor_x = a[n - 1].x;
        }
    }
    g->n = n;
    g->floor_x = floor_x;
    return 0;
}

MULTIVERSION
static int top_p_prefix(const float *x, Py_ssize_t V, const sample_params *sp, double u, Py_ssize_t amax, float top,
                        float s, float *raw_terms, int64_t *out_idx, double *out_val) {
    pair_t a[CAND_CAP];
    float e[CAND_CAP];
    int32_t ids[CAND_CAP];
    /* terms below 2^-16 of the top's rarely matter; a row that needs them fails and goes the long way */
    /* a small top-k needs only the k best in the prefix: a flat row is then pruned to its end */
    const int small_k = sp->top_k > 0 && sp->top_k < V && sp->top_k < CAND_CAP / 2;
    const Py_ssize_t keep = small_k && 2 * sp->top_k > 64 ? 2 * (Py_ssize_t)sp->top_k : small_k ? 64 : CAND_CAP / 2;
    prefix_t g = {a, 0, top - 11.1f / s, 0, small_k, keep < CAND_CAP / 2 ? keep : CAND_CAP / 2};
    const double z = exp_sum(x, V, top, s, NULL, 0, NULL, &g, NULL);
    const Py_ssize_t n = g.n;
    if (!(z >= 1.0) || n == 0) return 0; /* NaN: given up, or a NaN logit (the general path reports it) */
    /* keep a[r] while the mass before it is <= top_p * z (the first always); the prefix is put in
       order a chunk at a time (select the best of the rest, sort them), as far as the crossing: it
       is mostly a few dozen of the hundreds gathered, and sorting them all was 15 % of a row */
    const double target = sp->top_p * z;
    double cum = 0.0;
    Py_ssize_t r = 0;
    for (Py_ssize_t done = 0, chunk = 64; r < n && !(r > 0 && cum > target); chunk *= 4) {
        const Py_ssize_t end = n - done > chunk ? done + chunk : n;
        if (end < n) select_rank(a + done, n - done, end - done - 1);
        qsort(a + done, (size_t)(end - done), sizeof(pair_t), pair_cmp);
        for (; r < end; r++) {
            if (r > 0 && cum > target) break;
            cum += (double)exp_neg((a[r].x - top) * s);
        }
        done = end;
    }
    const Py_ssize_t k = sp->top_k > 0 && sp->top_k < V ? (Py_ssize_t)sp->top_k : V;
    if (!(cum > target)) { /* top-p keeps the whole prefix and more: only a top-k inside it helps */
        if (!(k < n && a[k - 1].x > a[n - 1].x)) return 0; /* (the k-th value's ties all in the prefix) */
        r = n;
    }
    if (r > k) { /* then top-k: the k-th value and its ties among those top-p kept */
        Py_ssize_t q = k;
        while (q < r && a[q].x == a[k - 1].x) q++;
        r = q;
    }
    /* the kept tokens in vocabulary order */
    for (Py_ssize_t i = 0; i < r; i++) ids[i] = a[i].j;
    qsort(ids, (size_t)r, sizeof(int32_t), int32_cmp);
    for (Py_ssize_t i = 0; i < r; i++) e[i] = exp_neg((x[ids[i]] - top) * s);
    finish_kept(x, V, sp, u, amax, top, ids, e, r, raw_terms, out_idx, out_val);
    return 1;
}

/* Small top-k (Dream's order: top-p over the whole row, then top-k): the kept set lies in the k
   largest, so only they are found (one scan that keeps a buffer of the best, pruned by selection)
   and sorted; no histogram of the row. Sets the cut as the general path would; returns 0 (the
   caller takes the general path) when fewer than k logits are finite. */
#define TOPK_FAST 1024
static int topk_cut(const float *x, Py_ssize_t V, const float *terms, const sample_params *sp, double z_all,
                    sample_work *w, float *cut_x, int32_t *cut_j) {
    const Py_ssize_t k = (Py_ssize_t)sp->top_k, cap = 2 * k + 64;
    pair_t *a = w->band; /* V pairs of room; cap of them used */
    Py_ssize_t n = 0;
    float thr = -INFINITY; /* once pruned: the k-th best so far; later ties come after it */
    for (Py_ssize_t j = 0; j < V; j++) {
        if (x[j] > thr) {
            a[n].x = x[j];
            a[n].j = (int32_t)j;
            if (++n == cap) {
                select_rank(a, n, k - 1);
                n = k;
                thr = a[k - 1].x;
            }
        }
    }
    if (n < k) return 0;
    if (n > k) select_rank(a, n, k - 1);
    qsort(a, (size_t)k, sizeof(pair_t), pair_cmp);
    if (sp->top_p < 1.0) { /* where top-p stops within the k: keep a[r] while the mass before it <= p */
        const double target = sp->top_p * z_all;
        double cum = 0.0;
        for (Py_ssize_t r = 0; r < k; r++) {
            if (r > 0 && cum > target) { /* top-p keeps r <= k tokens: cut at the last of them */
                *cut_x = a[r - 1].x;
                *cut_j = a[r - 1].j;
                return 1;
            }
            cum += (double)terms[a[r].j];
        }
        *cut_x = a[k - 1].x;
        if (cum > target) { /* top-p keeps exactly these k */
            *cut_j = a[k - 1].j;
            return 1;
        }
        /* top-p keeps more than k: the k-th value's ties beyond the k would need the general
           path's tie rule (top-p's own cut among them), so leave rows with such ties to it */
        Py_ssize_t at_or_above = 0;
        for (Py_ssize_t j = 0; j < V; j++) at_or_above += x[j] >= *cut_x;
        if (at_or_above > k) return 0;
    }
    *cut_x = a[k - 1].x; /* top-k: the k-th value and all its ties */
    *cut_j = INT32_MAX;
    return 1;
}

MULTIVERSION
static void sample_row(const float *x, Py_ssize_t V, const sample_params *sp, double u, sample_work *w,
                       int flags, int64_t *out_idx, double *out_val) {
    Py_ssize_t amax;
    const float top = row_argmax(x, 0, V, &amax);
    const int hot = sp->temperature > 0;
    /* 1/T as a finite, nonzero float: at T above about 1e45 it would round to 0 (and -inf logits
       times 0 to NaN); the clamp keeps the limit, the uniform draw over the finite logits */
    const double s_d = hot ? 1.0 / sp->temperature : 1.0;
    const float s = s_d < FLT_MIN ? FLT_MIN : s_d > FLT_MAX ? FLT_MAX : (float)s_d;
    if (sp->top_p < 1.0 && !(flags & NO_PREFIX) &&
        top_p_prefix(x, V, sp, u, amax, top, s, w->raw_terms, out_idx, out_val))
        return;
    if (flags & ONLY_PREFIX) {
        *out_idx = -1;
        *out_val = NAN;
        return;
    }
    float *terms = w->terms;
    const double z_all = row_terms(x, V, top, s, terms);
    if (isnan(z_all)) {
        *out_val = NAN;
        *out_idx = amax;
        for (Py_ssize_t j = 0; j < V; j++)
            if (isnan(x[j])) { /* numpy's argmax: the first NaN */
                *out_idx = j;
                break;
            }
        return;
    }
    const int by_p = sp->top_p < 1.0, by_k = sp->top_k > 0 && sp->top_k < V;
    if (!by_p && !by_k) { /* every token is kept */
        finish_kept(x, V, sp, u, amax, top, NULL, terms, V, w->raw_terms, out_idx, out_val);
        return;
    }

    /* The kept set is fixed by a cut (x, index) in the sorted order (kept: before or equal). */
    float cut_x = -INFINITY;
    int32_t cut_j = INT32_MAX;
    if (by_k && sp->top_k <= TOPK_FAST && V >= 4 * sp->top_k && topk_cut(x, V, terms, sp, z_all, w, &cut_x, &cut_j)) {
        /* The kept tokens (at most k and ties) in vocabulary order: blocks of LANES without one are
           skipped after a vectorised test, the others gathered branch-free. */
        Py_ssize_t nk = 0, i = 0;
        for (; i + LANES <= V; i += LANES) {
            int any = 0;
            for (int l = 0; l < LANES; l++) any |= x[i + l] >= cut_x;
            if (!any) continue;
            for (int l = 0; l < LANES; l++) {
                w->cand[nk] = (int32_t)(i + l);
                w->kept_e[nk] = terms[i + l];
                nk += (x[i + l] > cut_x) | ((x[i + l] == cut_x) & (i + l <= cut_j));
            }
        }
        for (; i < V; i++) {
            w->cand[nk] = (int32_t)i;
            w->kept_e[nk] = terms[i];
            nk += (x[i] > cut_x) | ((x[i] == cut_x) & (i <= cut_j));
        }
        finish_kept(x, V, sp, u, amax, top, w->cand, w->kept_e, nk, w->raw_terms, out_idx, out_val);
        return;
    }

    /* Histogram of top - x in NLIN equal buckets over the range where terms are nonzero (terms fall
       with x, so a bucket holds a slice of the sorted order): counts and masses. Top-p's crossing
       (and the k-th token) lie in one bucket, the band; only its tokens are then selected. */
    const float inv_w = (float)NLIN * s / 88.0f;
    int32_t *hcnt = w->hcnt;
    double *hmass = w->hmass;
    memset(hcnt, 0, sizeof(int32_t) * NLIN);
    memset(hmass, 0, sizeof(double) * NLIN);
    uint16_t *bucket = w->bucket;
    for (Py_ssize_t j = 0; j < V; j++) bucket[j] = (uint16_t)lin_bucket(x[j], top, inv_w); /* vectorised */
    for (Py_ssize_t j = 0; j < V; j++) {
        hcnt[bucket[j]]++;
        hmass[bucket[j]] += (double)terms[j];
    }
    int lo = NLIN - 1, hi = NLIN - 1; /* the band's buckets; those before it are surely kept */
    if (by_p) {
        const double target = sp->top_p * z_all;
        double cum = 0.0;
        for (int b = 0; b < NLIN; b++) {
            const double before = cum;
            cum += hmass[b];
            if (cum > target) {
                /* sums in bucket order round differently from the sorted order's: a crossing this
                   close to a bucket's edge may lie in the next nonempty bucket over */
                lo = hi = b;
                if (before > target * (1 - 1e-9))
                    for (lo = b - 1; lo > 0 && hcnt[lo] == 0; lo--) {}
                if (lo < 0) lo = 0;
                if (cum < target * (1 + 1e-9))
                    for (hi = b + 1; hi < NLIN - 1 && hcnt[hi] == 0; hi++) {}
                if (hi > NLIN - 1) hi = NLIN - 1;
                break;
            }
        }
    }
    if (by_k) {
        int64_t cnt = 0;
        int bk = NLIN - 1;
        for (int b = 0; b < NLIN; b++) {
            cnt += hcnt[b];
            if (cnt >= sp->top_k) {
                bk = b;
                break;
            }
        }
        if (!by_p || bk < lo) lo = hi = bk; /* top-k decides */
        /* else both lie in the band, or (bk > hi) top-p decides */
    }
    Py_ssize_t nb = 0;
    double head = 0.0;
    int64_t n_head = 0;
    for (int b = 0; b < lo; b++) {
        head += hmass[b];
        n_head += hcnt[b];
    }
    /* The band is a sliver of the row (about 1,000 of a flat 152k row): skip the blocks of LANES
       that have none of it (one vectorised test), gather branch-free in the others. */
    Py_ssize_t jb = 0;
    for (; jb + LANES <= V; jb += LANES) {
        int any = 0;
        for (int l = 0; l < LANES; l++) any |= (unsigned)(bucket[jb + l] - lo) <= (unsigned)(hi - lo);
        if (!any) continue;
        for (int l = 0; l < LANES; l++) {
            w->band[nb].x = x[jb + l];
            w->band[nb].j = (int32_t)(jb + l);
            nb += (unsigned)(bucket[jb + l] - lo) <= (unsigned)(hi - lo);
        }
    }
    for (; jb < V; jb++) {
        w->band[nb].x = x[jb];
        w->band[nb].j = (int32_t)jb;
        nb += (unsigned)(bucket[jb] - lo) <= (unsigned)(hi - lo);
    }
    /* The band's kept part, found by selection (no sort of the band): a cut (x, index) in the
       sorted order; kept = the head and every band token up to the cut. */
    Py_ssize_t keep = nb;
    if (by_p) {
        keep = select_mass(w->band, nb, terms, head, n_head, sp->top_p * z_all);
        if (keep > 0) {
            cut_x = w->band[keep - 1].x;
            cut_j = w->band[keep - 1].j;
        } else {
            cut_x = INFINITY; /* no band token kept */
            cut_j = -1;
        }
    }
    if (by_k && n_head + keep > sp->top_k) {
        const Py_ssize_t r = (Py_ssize_t)(sp->top_k - 1 - n_head);
        select_rank(w->band, keep, r);
        const float v = w->band[r].x; /* the k-th value: its ties stay (those top-p kept) */
        if (v != cut_x) {
            cut_x = v;
            cut_j = INT32_MAX;
        }
    }
    /* The kept terms in place, the others 0: a removed token then adds nothing to the sums, the
       draw or the score (0 * log(1e-10)). Vectorised; gathering the kept set (most of a flat row)
       was a scalar loop at 2 ns a logit, a quarter of the row's time. */
    for (Py_ssize_t j = 0; j < V; j++) {
        const int b = bucket[j];
        const int k = (b < lo) | ((b <= hi) & ((x[j] > cut_x) | ((x[j] == cut_x) & (j <= cut_j))));
        w->kept_e[j] = k ? terms[j] : 0.0f;
    }
    finish_kept(x, V, sp, u, amax, top, NULL, w->kept_e, V, w->raw_terms, out_idx, out_val);
}

/* Per thread: the histogram (NLIN doubles and int32), guided, terms, raw terms and kept terms (4V
   floats), candidates (V int32), band (V pairs), buckets (V uint16); rounded up to 64 bytes, so
   every thread's doubles are aligned and no two threads share a cache line. */
#define SAMPLE_WORK_BYTES(V) \
    (((size_t)NLIN * (sizeof(double) + sizeof(int32_t)) + \
      (size_t)(V) * (4 * sizeof(float) + sizeof(int32_t) + sizeof(pair_t)) + (size_t)(V) * sizeof(uint16_t) + 63) / 64 * 64)

static void sample_one(const float *logits, const float *uncond, float scale, Py_ssize_t V, int64_t row,
                       const sample_params *sp, double u, char *mem, int flags, int64_t *out_idx, double *out_val) {
    sample_work w;
    w.hmass = (double *)mem;
    w.hcnt = (int32_t *)(w.hmass + NLIN);
    mem = (char *)(w.hcnt + NLIN);
    w.guided = (float *)mem;
    w.terms = w.guided + V;
    w.raw_terms = w.terms + V;
    w.kept_e = w.raw_terms + V;
    w.cand = (int32_t *)(w.kept_e + V);
    w.band = (pair_t *)(w.cand + V);
    w.bucket = (uint16_t *)(w.band + V);
    const float *x = logits + row * V;
    if (uncond) {
        const float *un = uncond + row * V;
        for (Py_ssize_t j = 0; j < V; j++) w.guided[j] = (x[j] - un[j]) * scale + un[j];
        x = w.guided;
    }
    sample_row(x, V, sp, u, &w, flags, out_idx, out_val);
}

static void sample_all(const float *logits, const float *uncond, float scale, Py_ssize_t V, const int64_t *index,
                       Py_ssize_t n, const sample_params *sp, const double *u, char *work, int n_threads,
                       int flags, int64_t *out_idx, double *out_val) {
#ifdef _OPENMP
    if (n_threads > 1 && n > 1) {
        if (n_threads > n) n_threads = (int)n;
#pragma omp parallel num_threads(n_threads)
        {
            char *mine = work + (size_t)omp_get_thread_num() * SAMPLE_WORK_BYTES(V);
#pragma omp for schedule(dynamic, 1)
            for (Py_ssize_t r = 0; r < n; r++)
                sample_one(logits, uncond, scale, V, index[r], sp, u ? u[r] : 0.0, mine, flags, out_idx + r,
                           out_val + r);
        }
        return;
    }
#endif
    for (Py_ssize_t r = 0; r < n; r++)
        sample_one(logits, uncond, scale, V, index[r], sp, u ? u[r] : 0.0, work, flags, out_idx + r, out_val + r);
}

/* kind: 'f' float32, 'i' int64, 'd' float64; a byte-order prefix must mean this machine's order. */
static int format_is(const char *fmt, char kind) {
    if (fmt == NULL) return 0;
    const uint16_t probe = 1;
    const int little = *(const uint8_t *)&probe == 1;
    if (*fmt == '@' || *fmt == '=' || (*fmt == '<' && little) || (*fmt == '>' && !little)) fmt++;
    if (kind == 'i') return (strcmp(fmt, "q") == 0 || strcmp(fmt, "l") == 0);
    return fmt[0] == kind && fmt[1] == 0;
}

static int get(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize, char kind, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    if (view->itemsize != itemsize || !format_is(view->format, kind)) {
        PyErr_Format(PyExc_TypeError, "%s: expected %s items", what,
                     kind == 'f' ? "float32" : kind == 'd' ? "float64" : "int64");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Scratch for the rows' threads: the caller's bytearray (scoring.py keeps one per Python thread, so
   its pages stay mapped between calls; a fresh malloc of this size was page-faulted and zeroed on
   every call), grown to need bytes and held exported (not resizable) for the call; else malloc'd
   into *own. NULL with an exception set on failure. */
static char *align64(char *p) { return (char *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

static char *scratch(PyObject *obj, size_t need, Py_buffer *view, char **own) {
    *own = NULL;
    if (need == 0) return NULL;
    need += 64; /* room to start on a 64-byte boundary */
    if (obj && obj != Py_None) {
        if (!PyByteArray_Check(obj)) {
            PyErr_SetString(PyExc_TypeError, "work: expected a bytearray");
            return NULL;
        }
        /* exported: another call may be using it right now, with the GIL released */
        if (((PyByteArrayObject *)obj)->ob_exports > 0) {
            PyErr_SetString(PyExc_BufferError, "work: the bytearray is in use (one per thread)");
            return NULL;
        }
        if ((size_t)PyByteArray_GET_SIZE(obj) < need && PyByteArray_Resize(obj, (Py_ssize_t)need) < 0) return NULL;
        if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) < 0) return NULL;
        return align64((char *)view->buf);
    }
    *own = (char *)malloc(need);
    if (!*own) {
        PyErr_NoMemory();
        return NULL;
    }
    return align64(*own);
}

PyDoc_STRVAR(score_doc,
"score(logits, index, uncond, scale, mode, out_idx, out_val, n_threads=1, work=None)\n\n"
"For each row logits[index[r]] (with uncond: uncond + scale * (logits - uncond)), write its argmax\n"
"to out_idx[r] and its score to out_val[r]: mode 0 the argmax's softmax probability, 1 the top1-top2\n"
"probability margin, 2 Dream's entropy score. logits/uncond: C-contiguous float32 [rows, vocab];\n"
"index, out_idx: int64; out_val: float64. n_threads: OpenMP threads (see OPENMP). work: a bytearray\n"
"to use (and grow) as scratch instead of a fresh allocation.");

static PyObject *score(PyObject *self, PyObject *args) {
    PyObject *lo, *io, *uo, *oio, *ovo, *wo = NULL;
    double scale;
    int mode, n_threads = 1;
    if (!PyArg_ParseTuple(args, "OOOdiOO|iO", &lo, &io, &uo, &scale, &mode, &oio, &ovo, &n_threads, &wo)) return NULL;
#ifdef _OPENMP
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 512) n_threads = 512;
#else
    n_threads = 1;
#endif
    if (mode < MODE_CONF || mode > MODE_ENTROPY) {
        PyErr_SetString(PyExc_ValueError, "mode must be 0, 1 or 2");
        return NULL;
    }
    Py_buffer L = {0}, I = {0}, U = {0}, OI = {0}, OV = {0}, W = {0};
    PyObject *result = NULL;
    float *work = NULL;
    char *own = NULL;
    int64_t *index = NULL;
    if (get(lo, &L, 0, 4, 'f', "logits") < 0) return NULL;
    if (get(io, &I, 0, 8, 'i', "index") < 0) goto done;
    if (uo != Py_None && get(uo, &U, 0, 4, 'f', "uncond") < 0) goto done;
    if (get(oio, &OI, 1, 8, 'i', "out_idx") < 0) goto done;
    if (get(ovo, &OV, 1, 8, 'd', "out_val") < 0) goto done;
    if (L.ndim != 2) {
        PyErr_SetString(PyExc_TypeError, "logits: expected a 2-D float32 array");
        goto done;
    }
    Py_ssize_t rows = L.shape[0], V = L.shape[1];
    Py_ssize_t n = I.len / 8;
    if (OI.len / 8 != n || OV.len / 8 != n) {
        PyErr_SetString(PyExc_ValueError, "out_idx and out_val must have one item per index");
        goto done;
    }
    if (U.obj && (U.ndim != 2 || U.shape[0] != rows || U.shape[1] != V)) {
        PyErr_SetString(PyExc_ValueError, "uncond must have the shape of logits");
        goto done;
    }
    if (n > 0 && V == 0) {
        PyErr_SetString(PyExc_ValueError, "logits: empty rows");
        goto done;
    }
    /* A private copy, checked once: nothing (an overlapping output, another thread) can change the
       rows read while the GIL is released. */
    index = (int64_t *)malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    if (!index) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(index, I.buf, sizeof(int64_t) * (size_t)n);
    for (Py_ssize_t r = 0; r < n; r++)
        if (index[r] < 0 || index[r] >= rows) {
            PyErr_Format(PyExc_IndexError, "row %lld out of range", (long long)index[r]);
            goto done;
        }
    if (n > 0) {
        if ((Py_ssize_t)n_threads > n) n_threads = (int)n;
        int need_work = U.obj != NULL || mode == MODE_ENTROPY;
        if (need_work) {
            work = (float *)scratch(wo, sizeof(float) * 2 * (size_t)V * (size_t)n_threads, &W, &own);
            if (!work) goto done;
        }
        Py_BEGIN_ALLOW_THREADS
        score_all((const float *)L.buf, U.obj ? (const float *)U.buf : NULL, (float)scale, V, index, n,
                  mode, work, n_threads, (int64_t *)OI.buf, (double *)OV.buf);
        Py_END_ALLOW_THREADS
    }
    result = Py_None;
    Py_INCREF(result);
done:
    free(own);
    free(index);
    if (W.obj) PyBuffer_Release(&W);
    if (L.obj) PyBuffer_Release(&L);
    if (I.obj) PyBuffer_Release(&I);
    if (U.obj) PyBuffer_Release(&U);
    if (OI.obj) PyBuffer_Release(&OI);
    if (OV.obj) PyBuffer_Release(&OV);
    return result;
}

PyDoc_STRVAR(sample_doc,
"sample(logits, index, uncond, scale, temperature, top_k, top_p, raw, mode, uniforms, out_idx, out_val,\n"
"       n_threads=1, work=None, flags=0)\n\n"
"For each row (as in score), the token drawn from softmax(row / temperature) after top-p then top-k\n"
"(temperature 0: the argmax), by inverse CDF with uniforms[r] (float64, one per row; None when\n"
"temperature is 0), and its score (mode as in score): on that filtered distribution, or with raw=1\n"
"on the untempered, unfiltered softmax. work: as in score. flags: NO_PREFIX takes the general top-p\n"
"path for every row; ONLY_PREFIX gives index -1 where the short path cannot (tests compare the two).");

static PyObject *sample(PyObject *self, PyObject *args) {
    PyObject *lo, *io, *uo, *ro, *oio, *ovo, *wo = NULL;
    double scale, temperature, top_p;
    long long top_k;
    int raw, mode, n_threads = 1, flags = 0;
    if (!PyArg_ParseTuple(args, "OOOddLdiiOOO|iOi", &lo, &io, &uo, &scale, &temperature, &top_k, &top_p, &raw,
                          &mode, &ro, &oio, &ovo, &n_threads, &wo, &flags))
        return NULL;
#ifdef _OPENMP
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 512) n_threads = 512;
#else
    n_threads = 1;
#endif
    if (mode < MODE_CONF || mode > MODE_ENTROPY) {
        PyErr_SetString(PyExc_ValueError, "mode must be 0, 1 or 2");
        return NULL;
    }
    if (!(temperature >= 0) || !(top_p > 0) || top_k < 0) {
        PyErr_SetString(PyExc_ValueError, "temperature >= 0, top_p > 0 and top_k >= 0 expected");
        return NULL;
    }
    Py_buffer L = {0}, I = {0}, U = {0}, R = {0}, OI = {0}, OV = {0}, W = {0};
    PyObject *result = NULL;
    char *work = NULL, *own = NULL;
    int64_t *index = NULL;
    double *uniforms = NULL;
    if (get(lo, &L, 0, 4, 'f', "logits") < 0) return NULL;
    if (get(io, &I, 0, 8, 'i', "index") < 0) goto done;
    if (uo != Py_None && get(uo, &U, 0, 4, 'f', "uncond") < 0) goto done;
    if (ro != Py_None && get(ro, &R, 0, 8, 'd', "uniforms") < 0) goto done;
    if (get(oio, &OI, 1, 8, 'i', "out_idx") < 0) goto done;
    if (get(ovo, &OV, 1, 8, 'd', "out_val") < 0) goto done;
    if (L.ndim != 2) {
        PyErr_SetString(PyExc_TypeError, "logits: expected a 2-D float32 array");
        goto done;
    }
    Py_ssize_t rows = L.shape[0], V = L.shape[1];
    Py_ssize_t n = I.len / 8;
    if (OI.len / 8 != n || OV.len / 8 != n || (R.obj && R.len / 8 != n)) {
        PyErr_SetString(PyExc_ValueError, "out_idx, out_val and uniforms must have one item per index");
        goto done;
    }
    if (temperature > 0 && !R.obj) {
        PyErr_SetString(PyExc_ValueError, "temperature > 0 needs uniforms");
        goto done;
    }
    if (U.obj && (U.ndim != 2 || U.shape[0] != rows || U.shape[1] != V)) {
        PyErr_SetString(PyExc_ValueError, "uncond must have the shape of logits");
        goto done;
    }
    if (n > 0 && (V == 0 || V > INT32_MAX)) {
        PyErr_SetString(PyExc_ValueError, "logits: rows must hold 1 to 2^31-1 items");
        goto done;
    }
    /* Private copies, checked once (see score). */
    index = (int64_t *)malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    uniforms = (double *)malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!index || !uniforms) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(index, I.buf, sizeof(int64_t) * (size_t)n);
    if (R.obj) memcpy(uniforms, R.buf, sizeof(double) * (size_t)n);
    for (Py_ssize_t r = 0; r < n; r++)
        if (index[r] < 0 || index[r] >= rows) {
            PyErr_Format(PyExc_IndexError, "row %lld out of range", (long long)index[r]);
            goto done;
        }
    if (n > 0) {
        if ((Py_ssize_t)n_threads > n) n_threads = (int)n;
        work = scratch(wo, SAMPLE_WORK_BYTES(V) * (size_t)n_threads, &W, &own);
        if (!work) goto done;
        sample_params sp = {temperature, top_k, top_p, raw != 0, mode};
        Py_BEGIN_ALLOW_THREADS
        sample_all((const float *)L.buf, U.obj ? (const float *)U.buf : NULL, (float)scale, V, index, n, &sp,
                   R.obj ? uniforms : NULL, work, n_threads, flags, (int64_t *)OI.buf, (double *)OV.buf);
        Py_END_ALLOW_THREADS
    }
    result = Py_None;
    Py_INCREF(result);
done:
    free(own);
    free(index);
    free(uniforms);
    if (W.obj) PyBuffer_Release(&W);
    if (L.obj) PyBuffer_Release(&L);
    if (I.obj) PyBuffer_Release(&I);
    if (U.obj) PyBuffer_Release(&U);
    if (R.obj) PyBuffer_Release(&R);
    if (OI.obj) PyBuffer_Release(&OI);
    if (OV.obj) PyBuffer_Release(&OV);
    return result;
}

PyDoc_STRVAR(elementwise_doc,
"elementwise(which, x, out)\n\n"
"out = exp(x) (which 0, for x <= 0) or log(x) (which 1, for x > 0) with the kernel's own\n"
"polynomials, element by element (float32 buffers): lets the tests measure their accuracy.");

static PyObject *elementwise(PyObject *self, PyObject *args) {
    PyObject *xo, *oo;
    int which;
    if (!PyArg_ParseTuple(args, "iOO", &which, &xo, &oo)) return NULL;
    Py_buffer X = {0}, O = {0};
    if (get(xo, &X, 0, 4, 'f', "x") < 0) return NULL;
    if (get(oo, &O, 1, 4, 'f', "out") < 0) {
        PyBuffer_Release(&X);
        return NULL;
    }
    PyObject *result = NULL;
    if (X.len != O.len || !format_is(X.format, 'f') || !format_is(O.format, 'f')) {
        PyErr_SetString(PyExc_ValueError, "x and out: float32 buffers of one length");
    } else {
        const float *x = (const float *)X.buf;
        float *o = (float *)O.buf;
        for (Py_ssize_t j = 0; j < X.len / 4; j++) o[j] = which == 0 ? exp_neg(x[j]) : log_pos(x[j]);
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&X);
    PyBuffer_Release(&O);
    return result;
}

static PyMethodDef methods[] = {
    {"score", score, METH_VARARGS, score_doc},
    {"sample", sample, METH_VARARGS, sample_doc},
    {"elementwise", elementwise, METH_VARARGS, elementwise_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rowscore", "Row reductions of the denoising engine (see _rowscore.c).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__rowscore(void) {
    PyObject *m = PyModule_Create(&module);
#ifdef _OPENMP
    const int openmp = 1;
#else
    const int openmp = 0;
#endif
    if (m && (PyModule_AddIntConstant(m, "OPENMP", openmp) < 0 || PyModule_AddIntConstant(m, "NO_PREFIX", NO_PREFIX) < 0 ||
              PyModule_AddIntConstant(m, "ONLY_PREFIX", ONLY_PREFIX) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
