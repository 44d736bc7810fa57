/* One explicit step of darktable's 4-order anisotropic heat equation at one wavelet scale
 * (heat_PDE_diffusion in src/iop/diffuse.c), fused in one pass.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 *
 * out = max(0, hf * strength + sum_k speed_k * derivative_k / variance + lf), where
 * orders 1, 2 diffuse the low frequencies `lf` and orders 3, 4 the high frequencies `hf`;
 * orders 1, 3 steer along the gradient of lf and orders 2, 4 along the gradient of hf.
 * Where a mask is given, unmasked pixels keep hf + lf. The gradients, the 3x3 variance of
 * hf and the rotated laplacians all come from the two 3x3 stencils (dilation `mult`), each
 * row of which is summarised once, when it is loaded (row_t).
 */

/* FAST_MATH (never with PRECISE): the device's fast reciprocals, within the tolerances. */
#ifdef FAST_MATH
#define DIVIDE(a, b) native_divide((a), (b))
#else
#define DIVIDE(a, b) ((a) / (b))
#endif

#define ISOTROPIC 0
#define ISOPHOTE 1
#define GRADIENT 2

/* darktable's dt_vector_exp: an IEEE-754 bit trick, >= exp(x), meant for x <= 0. */
INLINE vec_t fast_exp(vec_t x)
{
    const vec_t k = fmax(x, -100.0f) * (float)(0x402DF854 - 0x3F800000);
    return AS_VEC(max(CONVERT_IVEC(k) + 0x3F800000, 0));
}

/* One row of a pack's 3x3 stencil, all the equation needs of it: the middle tap b and,
 * of the outer taps a (left) and c (right), their sum and difference. Consecutive outputs
 * share two stencil rows: a row is summarised once, when it is loaded. */
typedef struct
{
    vec_t centre, sum, difference;
} row_t;

INLINE row_t row_of(const vec_t a, const vec_t b, const vec_t c)
{
    row_t r;
    r.centre = b;
    r.sum = a + c;
    r.difference = a - c;
    return r;
}

/* The second differences of a stencil (rows r[0..2], top to bottom): darktable's rotated
 * laplacian [[a12/2, a22, -a12/2], [a11, -2(a11+a22), a11], [-a12/2, a22, a12/2]] applied
 * to the stencil equals a11 * horizontal + a22 * vertical + a12 * half_cross; `sum` and
 * `delta` are horizontal + vertical and horizontal - vertical. */
typedef struct
{
    vec_t vertical, half_cross, diagonal, centre, sum, delta;
} differences_t;

INLINE differences_t differences_of(const row_t *r)
{
    differences_t d;
    d.centre = r[1].centre;
    const vec_t horizontal = MAD(-2.0f, d.centre, r[1].sum);
    d.vertical = MAD(-2.0f, d.centre, r[0].centre + r[2].centre);
    d.half_cross = (r[0].difference - r[2].difference) * 0.5f;
    d.diagonal = r[0].sum + r[2].sum;
    d.sum = horizontal + d.vertical;
    d.delta = horizontal - d.vertical;
    return d;
}

/* The direction of a stencil's gradient (dx, dy): cos^2 and -cos*sin (0 and 0 where the
 * gradient is null), and the magnitude of (2 dx, 2 dy), the taps' plain differences (the
 * caller halves the anisotropy instead: the same exponential). */
typedef struct
{
    vec_t cos2, minus_cossin, magnitude;
} direction_t;

INLINE direction_t direction_of(const row_t *r)
{
    direction_t d;
    /* 2 dx and -2 dy */
    const vec_t dx = r[2].centre - r[0].centre, minus_dy = r[1].difference;
    const vec_t squared = MAD(dx, dx, minus_dy * minus_dy);
    const ivec_t nonzero = squared != 0.0f;
#ifdef FAST_MATH
    const vec_t inverse = select((vec_t)(0.0f), native_rsqrt(squared), nonzero);
    d.magnitude = squared * inverse;
    const vec_t cosine = dx * inverse, minus_sine = minus_dy * inverse;
#else
    d.magnitude = sqrt(squared);
    const vec_t cosine = select((vec_t)(0.0f), dx / d.magnitude, nonzero);
    const vec_t minus_sine = select((vec_t)(0.0f), minus_dy / d.magnitude, nonzero);
#endif
    d.cos2 = cosine * cosine;
    d.minus_cossin = cosine * minus_sine;
    return d;
}

/* One order's kernel * stencil. With sin^2 = 1 - cos^2, U = cos2 Lh + sin2 Lv - cs D/2
 * = Lv + cos2 (Lh - Lv) - cs D/2 and V = sin2 Lh + cos2 Lv + cs D/2 = Lh + Lv - U: the
 * isophote kernel gives U + c2 V, the gradient kernel V + c2 U, and the isotropic kernel
 * (Oono & Puri) diag/4 + (Lh + Lv)/2 - centre; c2 = fast_exp(-|gradient| * anisotropy).
 * Where the gradient is null, c2 = 1 and both give Lh + Lv whatever the angle. */
INLINE vec_t derivative(int mode, const vec_t c2, const differences_t s, const direction_t d)
{
    if (mode == ISOTROPIC)
        return MAD(s.diagonal, 0.25f, s.sum * 0.5f) - s.centre;
    const vec_t along = MAD(d.minus_cossin, s.half_cross, MAD(d.cos2, s.delta, s.vertical));
    const vec_t across = s.sum - along;
    return mode == ISOPHOTE ? MAD(c2, across, along) : MAD(c2, along, across);
}

/* Whether the pass divides by the local variance of hf (see pde_value). */
INLINE bool regularizes(float regularization)
{
#ifdef PDE_REGULARIZED
    return PDE_REGULARIZED;
#else
    return regularization != 0.0f;
#endif
}

/* A program built for one plan's structure (PDE_MODES defined, see
 * opencl_program.plan_options) knows the modes, the orders whose speed is 0 at every
 * scale (PDE_ACTIVE), the orders whose exponential equals the one of order k - 2
 * (PDE_SAME_ANISOTROPY) and, where all scales agree, whether they regularise
 * (PDE_REGULARIZED 1 or 0): the compiler then drops the branches and the work of the other
 * orders, and the row sums of hf^2 where none regularises. Same arithmetic as
 * the general program, which reads them from the arguments: the same results in precise
 * arithmetic; with fast math a compiler may contract products and sums (FMA) differently
 * in the two programs (NVIDIA: up to 5.4e-7 apart). */
/* The update of one pack from the rows of its 3x3 stencils of lf (L) and hf (H), top to
 * bottom, and the sums of hf^2 along those rows (`squares`, read where it regularises). */
INLINE vec_t pde_value(const row_t *L, const row_t *H, const vec_t *squares, float4 speed,
                       int4 mode, float4 anisotropy, float strength, float regularization,
                       float variance_threshold)
{
    vec_t result = H[1].centre * strength;
#ifdef PDE_MODES
    const bool active[4] = PDE_ACTIVE, same_anisotropy[4] = PDE_SAME_ANISOTROPY;
    const int modes[4] = PDE_MODES;
    const float speeds[4] = {active[0] ? speed.s0 : 0.0f, active[1] ? speed.s1 : 0.0f,
                             active[2] ? speed.s2 : 0.0f, active[3] ? speed.s3 : 0.0f};
#else
    const float speeds[4] = {speed.s0, speed.s1, speed.s2, speed.s3};
    const int modes[4] = {mode.s0, mode.s1, mode.s2, mode.s3};
    const bool same_anisotropy[4] = {false, false, anisotropy.s0 == anisotropy.s2,
                                     anisotropy.s1 == anisotropy.s3};
#endif
    if (speeds[0] != 0.0f || speeds[1] != 0.0f || speeds[2] != 0.0f || speeds[3] != 0.0f)
    {
        /* halved: direction_of's magnitude is twice the gradient's */
        const float anisotropies[4] = {anisotropy.s0 * 0.5f, anisotropy.s1 * 0.5f,
                                       anisotropy.s2 * 0.5f, anisotropy.s3 * 0.5f};
        const differences_t stencil[2] = {differences_of(L), differences_of(H)};
        direction_t direction[2];
        #pragma unroll
        for (int steer = 0; steer < 2; steer++)
            if ((speeds[steer] != 0.0f && modes[steer] != ISOTROPIC)
                || (speeds[steer + 2] != 0.0f && modes[steer + 2] != ISOTROPIC))
                direction[steer] = direction_of(steer == 0 ? L : H);

        vec_t acc = (vec_t)(0.0f);
        bool first = true;
        vec_t c2[4];
        #pragma unroll
        for (int k = 0; k < 4; k++)
        {
            if (speeds[k] == 0.0f) continue;
            /* orders k and k + 2 steer along the same gradient: one exponential when their
             * anisotropies agree (the same value either way) */
            if (modes[k] != ISOTROPIC)
                c2[k] = (same_anisotropy[k] && speeds[k - 2] != 0.0f
                         && modes[k - 2] != ISOTROPIC)
                        ? c2[k - 2] : fast_exp(-direction[k % 2].magnitude * anisotropies[k]);
            else
                c2[k] = (vec_t)(0.0f);
            const vec_t term = derivative(modes[k], c2[k], stencil[k / 2], direction[k % 2]);
            acc = first ? term * speeds[k] : MAD(term, speeds[k], acc);
            first = false;
        }
        /* the 3x3 sum of hf^2, row by row */
        if (regularizes(regularization))
            acc = DIVIDE(acc, MAD(squares[0] + squares[1] + squares[2], regularization,
                                  variance_threshold));
        else
            acc = DIVIDE(acc, (vec_t)(variance_threshold));
        result = result + acc;
    }
    return fmax(result + L[1].centre, 0.0f);
}

/* Row y of the pack's update from its stencils, stored in `out`: where a mask is used,
 * unmasked pixels keep hf + lf, unclamped. */
INLINE void pde_store(const row_t *L, const row_t *H, const vec_t *squares, global float *out,
                      global const uchar *mask, int use_mask, const pack_t pack, int y,
                      int width, int channels, float4 speed, int4 mode, float4 anisotropy,
                      float strength, float regularization, float variance_threshold)
{
    vec_t result = pde_value(L, H, squares, speed, mode, anisotropy, strength, regularization,
                             variance_threshold);
    if (use_mask)
    {
        global const uchar *mask_row = mask + y * width;
        const vec_t kept = H[1].centre + L[1].centre;
        ivec_t channel;
        const ivec_t column = pack_columns(pack, channels, &channel);
        const ivec_t inside = CONVERT_IVEC(GATHER(mask_row, column)) != 0;
        result = select(kept, result, inside);
    }
    store_pack(out + y * width * channels, pack, result);
}

/* ROWS rows of one pack, y0, y0 + mult, ...: consecutive rows share two of their three
 * stencil rows, so the work item reads and summarises ROWS + 2 rows of lf and hf instead
 * of 3 * ROWS. */
INLINE void pde_pack(global const float *hf, global const float *lf, global float *out,
                     global const uchar *mask, int use_mask, const pack_t pack, int y0,
                     int width, int height, int channels, int mult, float4 speed,
                     int4 mode, float4 anisotropy, float strength, float regularization,
                     float variance_threshold, bool interior)
{
    const int row_length = width * channels;
    row_t L[3], H[3];
    vec_t squares[3];
    #pragma unroll
    for (int k = 0; k < ROWS + 2; k++)
    {
        if (k >= 3)  /* one row further down: rows 1 and 2 become rows 0 and 1 */
        {
            L[0] = L[1];
            L[1] = L[2];
            H[0] = H[1];
            H[1] = H[2];
            squares[0] = squares[1];
            squares[1] = squares[2];
        }
        const int i = k < 3 ? k : 2;
        const int row = clamp(y0 + (k - 1) * mult, 0, height - 1) * row_length;
        vec_t l[3], h[3];
        #pragma unroll
        for (int j = 0; j < 3; j++)
        {
            l[j] = load_pack(lf + row, pack, (j - 1) * mult, width, channels, interior);
            h[j] = load_pack(hf + row, pack, (j - 1) * mult, width, channels, interior);
        }
        L[i] = row_of(l[0], l[1], l[2]);
        H[i] = row_of(h[0], h[1], h[2]);
        squares[i] = regularizes(regularization)
                     ? MAD(h[2], h[2], MAD(h[1], h[1], h[0] * h[0])) : (vec_t)(0.0f);
        if (k < 2) continue;
        const int y = y0 + (k - 2) * mult;
        if (k > 2 && y >= height) return;
        pde_store(L, H, squares, out, mask, use_mask, pack, y, width, channels, speed, mode,
                  anisotropy, strength, regularization, variance_threshold);
    }
}

kernel void pde_step(global const float *restrict hf, global const float *restrict lf,
                     global float *restrict out, global const uchar *restrict mask,
                     int use_mask, int width, int height, int channels, int mult, int classes,
                     int aligned, int plane_stride, int mask_stride, float4 speed, int4 mode,
                     float4 anisotropy, float strength, float regularization,
                     float variance_threshold)
{
    const size_t start = plane_start(classes, plane_stride);
    hf += start;
    lf += start;
    out += start;
    mask += plane_start(classes, mask_stride);
    const int y0 = first_row(classes);
    const int p = get_global_id(0);
    if (y0 >= height || VEC * p >= width * channels) return;
    const pack_t pack = make_pack(p, width, channels, aligned);
    if (pack_is_interior(pack, mult, width, channels))
        pde_pack(hf, lf, out, mask, use_mask, pack, y0, width, height, channels, mult, speed,
                 mode, anisotropy, strength, regularization, variance_threshold, true);
    else
        pde_pack(hf, lf, out, mask, use_mask, pack, y0, width, height, channels, mult, speed,
                 mode, anisotropy, strength, regularization, variance_threshold, false);
}
