/* The inpainting start: darktable's luminance mask, and its seeded noise (inpaint_mask() in
 * src/iop/diffuse.c), the same draws as napari_diffuse.noise.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 *
 * Masked pixels become |gaussian_noise(v, v)| per channel, from a xoshiro128+ generator
 * seeded per pixel with splitmix32. The seed depends only on the pixel's flat index in the
 * whole image (`origin` places this tile in an image `full_width` wide), so tiles get the
 * noise the whole image would. Channel c uses draws 2c and 2c + 1 after four warm-ups.
 * keep_saturated, last, is the optional floor on saturated channels after the last iteration.
 */

#ifdef cl_khr_fp64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif

INLINE uint splitmix32(ulong seed)
{
    ulong result = (seed ^ (seed >> 33)) * 0x62A9D9ED799705F5UL;
    result = (result ^ (result >> 28)) * 0xCB24D0A5C88C35B3UL;
    return (uint)(result >> 32);
}

INLINE float xoshiro128plus(uint4 *state)
{
    uint4 s = *state;
    const uint result = s.x + s.w;
    const uint t = s.y << 9;
    s.z ^= s.x;
    s.w ^= s.y;
    s.y ^= s.z;
    s.x ^= s.w;
    s.z ^= t;
    s.w = rotate(s.w, 11u);
    *state = s;
    return (float)(result >> 8) * 0x1.0p-24f;
}

/* darktable's luminance mask (build_mask() in diffuse.c): any colour channel above the
 * threshold; R, G, B of 3 or 4 channels (a 4th channel is alpha), every channel otherwise. */
kernel void luminance_mask(global const float *image, global uchar *mask, int width,
                           int height, int channels, float threshold)
{
    const int x = get_global_id(0), y = get_global_id(1);
    if (x >= width || y >= height) return;
    const int colours = (channels == 3 || channels == 4) ? 3 : channels;
    global const float *pixel_values = image + (y * width + x) * channels;
    uchar above = 0;
    for (int c = 0; c < colours; c++) above |= pixel_values[c] > threshold;
    mask[y * width + x] = above;
}

kernel void inpaint_noise(global float *image, global const uchar *mask, int width,
                          int height, int channels, int origin_row, int origin_column,
                          int full_width)
{
    const int x = get_global_id(0), y = get_global_id(1);
    if (x >= width || y >= height || !mask[y * width + x]) return;

    /* darktable's indexing: k is the index of the pixel's first float, 4 per pixel */
    const ulong pixel = (ulong)(y + origin_row) * (ulong)full_width + (ulong)(x + origin_column);
    const ulong k = 4UL * pixel;
    const uint i = (uint)(k / (ulong)full_width);
    const uint j = (uint)(k - (ulong)i);
    const uint j1 = j + 1u;
    uint4 state = (uint4)(splitmix32(j1), splitmix32((ulong)j1 * (ulong)(i + 3u)),
                          splitmix32(1337UL), splitmix32(666UL));
    for (int n = 0; n < 4; n++) xoshiro128plus(&state);
    const bool use_cosine = ((i % 2u) | (j % 2u)) != 0u;

    global float *pixel_values = image + (y * width + x) * channels;
    for (int c = 0; c < channels; c++)
    {
        const float u1 = fmax(xoshiro128plus(&state), FLT_MIN);
        const float u2 = xoshiro128plus(&state);
#ifdef cl_khr_fp64
        const float angle = (float)(2.0 * M_PI * (double)u2);
#else
        const float angle = 2.0f * M_PI_F * u2;
#endif
        const float radius = sqrt(-2.0f * log(u1));
        const float noise = radius * (use_cosine ? cos(angle) : sin(angle));
        const float value = pixel_values[c];
        pixel_values[c] = fabs(noise * value + value);
    }
}

/* keep_saturated (napari-diffuse's own, not darktable's): after the last iteration, every
 * channel of a masked pixel whose input value was >= threshold ends at least at threshold,
 * so saturated cores keep their level instead of sinking below it (numpy_solver.keep_saturated).
 * `input` is the image as it was uploaded, before the inpainting noise. */
kernel void keep_saturated(global float *image, global const float *input,
                           global const uchar *mask, int width, int height, int channels,
                           float threshold)
{
    const int x = get_global_id(0), y = get_global_id(1);
    if (x >= width || y >= height || !mask[y * width + x]) return;
    const int first = (y * width + x) * channels;
    for (int c = 0; c < channels; c++)
        if (input[first + c] >= threshold) image[first + c] = fmax(image[first + c], threshold);
}
