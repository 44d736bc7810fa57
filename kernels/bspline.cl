/* One level of the a-trous B-spline wavelet decomposition, fused in one pass.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 *
 * Products and sums are rounded one by one in every arithmetic mode: on NVIDIA's OpenCL
 * that ran faster than fused multiply-adds here, and it gives the NumPy solver's levels.
 *
 * lf = max(0, horizontal(max(0, vertical(src)))) with the 5-tap (1 4 6 4 1)/16 filter
 * dilated by `mult`, and hf = src - lf. Each work item computes the 5 clipped vertical
 * sums its horizontal taps need straight from `src` (the caches serve the overlaps), so
 * the level costs one read of `src` and one write of each output.
 */

constant float bspline_weight[5] = {0.0625f, 0.25f, 0.375f, 0.25f, 0.0625f};

INLINE void bspline_pack(global const float *src, global float *lf, global float *hf,
                         const pack_t pack, int y, int width, int height, int channels,
                         int mult, bool interior)
{
    const int row_length = width * channels;
    global const float *rows[5];
    #pragma unroll
    for (int i = 0; i < 5; i++)
        rows[i] = src + clamp(y + (i - 2) * mult, 0, height - 1) * row_length;

    vec_t lowpass = (vec_t)(0.0f);
    #pragma unroll
    for (int j = 0; j < 5; j++)
    {
        const int dx = (j - 2) * mult;
        vec_t vertical = load_pack(rows[0], pack, dx, width, channels, interior)
                          * bspline_weight[0];
        #pragma unroll
        for (int i = 1; i < 5; i++)
            vertical = vertical + load_pack(rows[i], pack, dx, width, channels, interior)
                                  * bspline_weight[i];
        vertical = fmax(vertical, 0.0f) * bspline_weight[j];
        lowpass = j == 0 ? vertical : lowpass + vertical;
    }
    lowpass = fmax(lowpass, 0.0f);
    const vec_t centre = load_pack(rows[2], pack, 0, width, channels, interior);
    store_pack(lf + y * row_length, pack, lowpass);
    store_pack(hf + y * row_length, pack, centre - lowpass);
}

kernel void bspline_level(global const float *src, global float *lf, global float *hf,
                          int width, int height, int channels, int mult, int classes,
                          int aligned)
{
    const int y = class_row(classes);
    const int p = get_global_id(0);
    if (y >= height || VEC * p >= width * channels) return;
    const pack_t pack = make_pack(p, width, channels, aligned);
    if (pack_is_interior(pack, 2 * mult, width, channels))
        bspline_pack(src, lf, hf, pack, y, width, height, channels, mult, true);
    else
        bspline_pack(src, lf, hf, pack, y, width, height, channels, mult, false);
}
