/* One level of the a-trous B-spline wavelet decomposition, fused in one pass.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 *
 * Products and sums are rounded one by one in every arithmetic mode: on NVIDIA's OpenCL
 * that ran faster than fused multiply-adds here, and it gives the NumPy solver's levels.
 *
 * lf = max(0, horizontal(max(0, vertical(src)))) with the 5-tap (1 4 6 4 1)/16 filter
 * dilated by `mult`, and hf = src - lf. A work item computes ROWS rows of one pack, rows
 * y0, y0 + mult, ... (the rows of its residue class, see first_row): their vertical taps
 * overlap, so it reads ROWS + 4 rows (5 taps each) instead of 5 * ROWS, one horizontal
 * tap at a time. The sums are made in the same order whatever ROWS is: every ROWS gives
 * the same result.
 */

constant float bspline_weight[5] = {0.0625f, 0.25f, 0.375f, 0.25f, 0.0625f};

/* Horizontal tap j of ROWS rows from the column of ROWS + 4 vertical taps at that tap:
 * lowpass[r] accumulates weight j * max(0, vertical sum), centre[r] keeps the source. */
INLINE void bspline_tap(const vec_t *column, int j, vec_t *lowpass, vec_t *centre)
{
    #pragma unroll
    for (int r = 0; r < ROWS; r++)
    {
        vec_t vertical = column[r] * bspline_weight[0];
        #pragma unroll
        for (int i = 1; i < 5; i++)
            vertical = vertical + column[r + i] * bspline_weight[i];
        vertical = fmax(vertical, 0.0f) * bspline_weight[j];
        lowpass[r] = j == 0 ? vertical : lowpass[r] + vertical;
        if (j == 2) centre[r] = column[r + 2];
    }
}

/* lf = max(0, lowpass) and hf = centre - lf of the pack's ROWS rows y0, y0 + mult, ... */
INLINE void bspline_store(global float *lf, global float *hf, const pack_t pack, int y0,
                          int height, int row_length, int mult, const vec_t *lowpass,
                          const vec_t *centre)
{
    #pragma unroll
    for (int r = 0; r < ROWS; r++)
    {
        const int y = y0 + r * mult;
        if (r > 0 && y >= height) return;
        const vec_t low = fmax(lowpass[r], 0.0f);
        store_pack(lf + y * row_length, pack, low);
        store_pack(hf + y * row_length, pack, centre[r] - low);
    }
}

INLINE void bspline_pack(global const float *src, global float *lf, global float *hf,
                         const pack_t pack, int y0, int width, int height, int channels,
                         int mult, bool interior)
{
    const int row_length = width * channels;
    global const float *rows[ROWS + 4];
    #pragma unroll
    for (int k = 0; k < ROWS + 4; k++)
        rows[k] = src + clamp(y0 + (k - 2) * mult, 0, height - 1) * row_length;

    vec_t lowpass[ROWS], centre[ROWS];
    #pragma unroll
    for (int j = 0; j < 5; j++)
    {
        vec_t column[ROWS + 4];
        #pragma unroll
        for (int k = 0; k < ROWS + 4; k++)
            column[k] = load_pack(rows[k], pack, (j - 2) * mult, width, channels, interior);
        bspline_tap(column, j, lowpass, centre);
    }
    bspline_store(lf, hf, pack, y0, height, row_length, mult, lowpass, centre);
}

kernel void bspline_level(global const float *restrict src, global float *restrict lf,
                          global float *restrict hf, int width, int height, int channels,
                          int mult, int classes, int aligned, int plane_stride)
{
    const size_t start = plane_start(classes, plane_stride);
    src += start;
    lf += start;
    hf += start;
    const int y0 = first_row(classes);
    const int p = get_global_id(0);
    if (y0 >= height || VEC * p >= width * channels) return;
    const pack_t pack = make_pack(p, width, channels, aligned);
    if (pack_is_interior(pack, 2 * mult, width, channels))
        bspline_pack(src, lf, hf, pack, y0, width, height, channels, mult, true);
    else
        bspline_pack(src, lf, hf, pack, y0, width, height, channels, mult, false);
}
