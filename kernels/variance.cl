/* darktable's edge-variance term at the finest scale, averaged over channels: the
 * divisor of every speed (see napari_diffuse.api.variance_map).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 *
 * out = mean_c(threshold + regularization * sum_3x3(hf^2)), from the finest level's high
 * frequencies `hf` (bspline_level with mult 1). One work item per pixel.
 */

kernel void variance_map(global const float *hf, global float *out, int width, int height,
                         int channels, float regularization, float variance_threshold)
{
    const int x = get_global_id(0), y = get_global_id(1);
    if (x >= width || y >= height) return;
    const int row_length = width * channels;
    float total = 0.0f;
    for (int c = 0; c < channels; c++)
    {
        float squares = 0.0f;
        for (int i = -1; i <= 1; i++)
        {
            global const float *row = hf + clamp(y + i, 0, height - 1) * row_length + c;
            for (int j = -1; j <= 1; j++)
            {
                const float h = row[clamp(x + j, 0, width - 1) * channels];
                squares = squares + h * h;
            }
        }
        total = total + (squares * regularization + variance_threshold);
    }
    out[y * width + x] = total / (float)channels;
}
