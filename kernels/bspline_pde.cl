/* The coarsest scale of an iteration in one pass: its B-spline level and its PDE step.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 *
 * Separately, bspline_level writes the coarsest lf and hf and pde_step reads them back at
 * once: four image-sized arrays moved for nothing. Here each work item computes lf and
 * hf where the PDE's 3x3 stencil reads them, from the 5x5 taps of the finer level around
 * each stencil point, in bspline_level's arithmetic and order (the same values bit for
 * bit), then runs pde_step's update: the pass reads the level and writes the result.
 * Stencil points and taps clamp to the image as the two passes clamp them (the stencil
 * point first, then its taps).
 */

/* The pack's neighbour `dx` pixels from its neighbour `stencil` pixels away, each step
 * clamped to the row (a tap of a clamped stencil column). Border packs only. */
INLINE vec_t load_pack_from(global const float *row, const pack_t pack, int stencil, int dx,
                            int width, int channels)
{
    ivec_t channel;
    const ivec_t column = pack_columns(pack, channels, &channel);
    const ivec_t index = clamp(clamp(column + stencil, 0, width - 1) + dx, 0, width - 1);
    return GATHER(row, index * channels + channel);
}

/* lf = max(0, the B-spline low-pass) from the 5 taps' vertical sums, and hf = centre - lf:
 * bspline_tap's and bspline_store's arithmetic. */
INLINE void level_point(const vec_t *vertical, vec_t centre, vec_t *lf, vec_t *hf)
{
    vec_t lowpass = vertical[0] * bspline_weight[0];
    #pragma unroll
    for (int t = 1; t < 5; t++)
        lowpass = lowpass + vertical[t] * bspline_weight[t];
    *lf = fmax(lowpass, 0.0f);
    *hf = centre - *lf;
}

/* max(0, the vertical 5-tap sum) of the level at the pack's column + dx, in rows[]. */
INLINE vec_t vertical_sum(global const float *const *rows, const pack_t pack, int stencil,
                          int dx, int width, int channels, bool interior)
{
    vec_t sum = (vec_t)(0.0f);
    #pragma unroll
    for (int k = 0; k < 5; k++)
    {
        const vec_t tap = interior
            ? load_pack(rows[k], pack, stencil + dx, width, channels, true)
            : load_pack_from(rows[k], pack, stencil, dx, width, channels);
        sum = k == 0 ? tap * bspline_weight[0] : sum + tap * bspline_weight[k];
    }
    return fmax(sum, 0.0f);
}

/* lf (L) and hf (H) of the coarsest scale at the 3 stencil points of row y (clamped):
 * columns (j - 1) * mult. Interior packs share the vertical sums of the 7 columns the
 * three points' taps cover. */
INLINE void level_row(global const float *level, const pack_t pack, int y, int width,
                      int height, int channels, int mult, bool interior, vec_t *L, vec_t *H)
{
    const int row_length = width * channels;
    global const float *rows[5];
    #pragma unroll
    for (int k = 0; k < 5; k++)
        rows[k] = level + clamp(y + (k - 2) * mult, 0, height - 1) * row_length;
    if (interior)
    {
        vec_t vertical[7];
        #pragma unroll
        for (int u = 0; u < 7; u++)
            vertical[u] = vertical_sum(rows, pack, 0, (u - 3) * mult, width, channels, true);
        #pragma unroll
        for (int j = 0; j < 3; j++)
            level_point(vertical + j,
                        load_pack(rows[2], pack, (j - 1) * mult, width, channels, true),
                        L + j, H + j);
        return;
    }
    #pragma unroll
    for (int j = 0; j < 3; j++)
    {
        vec_t vertical[5];
        #pragma unroll
        for (int t = 0; t < 5; t++)
            vertical[t] = vertical_sum(rows, pack, (j - 1) * mult, (t - 2) * mult, width,
                                       channels, false);
        level_point(vertical, load_pack_from(rows[2], pack, (j - 1) * mult, 0, width, channels),
                    L + j, H + j);
    }
}

/* pde_pack with the stencils computed from the level instead of loaded. */
INLINE void bspline_pde_pack(global const float *level, global float *out,
                             global const uchar *mask, int use_mask, const pack_t pack, int y0,
                             int width, int height, int channels, int mult, float4 speed,
                             int4 mode, float4 anisotropy, float strength,
                             float regularization, float variance_threshold, bool interior)
{
    vec_t L[9], H[9];
    #pragma unroll
    for (int k = 0; k < ROWS + 2; k++)
    {
        if (k >= 3) slide_down(L, H);
        const int i = k < 3 ? k : 2;
        level_row(level, pack, clamp(y0 + (k - 1) * mult, 0, height - 1), width, height,
                  channels, mult, interior, L + 3 * i, H + 3 * i);
        if (k < 2) continue;
        const int y = y0 + (k - 2) * mult;
        if (k > 2 && y >= height) return;
        pde_store(L, H, out, mask, use_mask, pack, y, width, channels, speed, mode,
                  anisotropy, strength, regularization, variance_threshold);
    }
}

kernel void bspline_pde_step(global const float *restrict level, global float *restrict out,
                             global const uchar *restrict mask, int use_mask, int width,
                             int height, int channels, int mult, int classes, int aligned,
                             int plane_stride, int mask_stride, float4 speed, int4 mode,
                             float4 anisotropy, float strength, float regularization,
                             float variance_threshold)
{
    const size_t start = plane_start(classes, plane_stride);
    level += start;
    out += start;
    mask += plane_start(classes, mask_stride);
    const int y0 = first_row(classes);
    const int p = get_global_id(0);
    if (y0 >= height || VEC * p >= width * channels) return;
    const pack_t pack = make_pack(p, width, channels, aligned);
    if (pack_is_interior(pack, 3 * mult, width, channels))
        bspline_pde_pack(level, out, mask, use_mask, pack, y0, width, height, channels, mult,
                         speed, mode, anisotropy, strength, regularization, variance_threshold,
                         true);
    else
        bspline_pde_pack(level, out, mask, use_mask, pack, y0, width, height, channels, mult,
                         speed, mode, anisotropy, strength, regularization, variance_threshold,
                         false);
}
