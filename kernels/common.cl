/* napari-diffuse OpenCL kernels: layout and helpers shared by every kernel.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 *
 * An image is float32, `height` rows of `width * channels` floats (channels last, as the
 * NumPy solver holds it). Filtering kernels work on packs: one work item handles VEC
 * consecutive floats of a row (1, 2, 4 or 8, set by the host with -DVEC=...; the last pack of a
 * row may be partial), so the cost is proportional to the number of floats whatever the
 * number of channels. Borders clamp to the edge pixel. The host builds the files in this
 * order: common, bspline, pde, inpaint, variance.
 */

/* Every product and sum is rounded as written, so that any vector width gives the same
 * result. MAD(a, b, c) is a * b + c: rounded twice with PRECISE (the host's default on
 * CPUs: the NumPy solver's arithmetic), fused otherwise (darktable's reference tolerances
 * allow for both). */
#pragma OPENCL FP_CONTRACT OFF
#ifdef PRECISE
#define MAD(a, b, c) ((a) * (b) + (c))
#else
#define MAD(a, b, c) fma((a), (b), (c))
#endif

#ifndef VEC
#define VEC 4
#endif
#if VEC == 8
typedef float8 vec_t;
typedef int8 ivec_t;
#define vload_vec vload8
#define AS_VEC as_float8
#define CONVERT_IVEC convert_int8
#define vstore_vec vstore8
#define LANES (int8)(0, 1, 2, 3, 4, 5, 6, 7)
#define GATHER(a, i) (float8)(a[(i).s0], a[(i).s1], a[(i).s2], a[(i).s3], \
                              a[(i).s4], a[(i).s5], a[(i).s6], a[(i).s7])
#elif VEC == 4
typedef float4 vec_t;
typedef int4 ivec_t;
#define vload_vec vload4
#define AS_VEC as_float4
#define CONVERT_IVEC convert_int4
#define vstore_vec vstore4
#define LANES (int4)(0, 1, 2, 3)
#define GATHER(a, i) (float4)(a[(i).s0], a[(i).s1], a[(i).s2], a[(i).s3])
#elif VEC == 2
typedef float2 vec_t;
typedef int2 ivec_t;
#define vload_vec vload2
#define AS_VEC as_float2
#define CONVERT_IVEC convert_int2
#define vstore_vec vstore2
#define LANES (int2)(0, 1)
#define GATHER(a, i) (float2)(a[(i).s0], a[(i).s1])
#elif VEC == 1
typedef float vec_t;
typedef int ivec_t;
#define vload_vec(offset, p) ((p)[offset])
#define vstore_vec(value, offset, p) ((p)[offset] = (value))
#define AS_VEC as_float
#define CONVERT_IVEC convert_int
#define LANES 0
#define GATHER(a, i) (a[i])
#else
#error "VEC must be 1, 2, 4 or 8"
#endif

/* Helpers are inlined so that each kernel's interior and border paths get specialised. */
#ifdef __clang__
#define INLINE inline __attribute__((always_inline))
#else
#define INLINE inline
#endif

/* Rows per work item of the filtering kernels (set by the host with -DROWS=...). */
#ifndef ROWS
#define ROWS 1
#endif

/* The first row of a filtering work item. Dimension 2 is the plane of a batch times
 * `classes` plus the residue class of the row modulo the stencils' dilation (`classes` =
 * min(dilation, height) classes), and dimension 1 a block of ROWS consecutive ranks in
 * that class, so the rows of a work item, and of a work-group, are y0, y0 + dilation, ...:
 * the rows their vertical taps share. When `classes` < dilation each class holds one row,
 * so a work item's later rows, y0 + dilation and beyond, are past the image's end, as are
 * rows past the last rank. */
INLINE int first_row(int classes)
{
    return get_global_id(1) * ROWS * classes + (int)(get_global_id(2) % classes);
}

/* The batch plane of a filtering work item (planes lie `stride` elements apart). */
INLINE size_t plane_start(int classes, int stride)
{
    return (get_global_id(2) / classes) * (size_t)stride;
}

/* Where the VEC floats of a pack are: `first` is the offset of its first float in the
 * row, `count` how many lie inside the row; `aligned` says that every pack and neighbour
 * starts on a multiple of VEC floats (rows of a multiple of VEC floats, and neighbours a
 * multiple of VEC floats apart: channels * dilation % VEC == 0), so vector loads may be
 * aligned ones. */
typedef struct
{
    int first;
    int count;
    int aligned;
} pack_t;

INLINE pack_t make_pack(int p, int width, int channels, int aligned)
{
    pack_t pack;
    pack.first = VEC * p;
    pack.count = min(VEC, width * channels - pack.first);
    pack.aligned = aligned;
    return pack;
}

/* The pixel column of each float of the pack (floats past the row's end repeat the
 * row's last float) and, through `channel`, its channel. Divides: border packs only. */
INLINE ivec_t pack_columns(const pack_t pack, int channels, ivec_t *channel)
{
    const ivec_t offset = min(pack.first + LANES, pack.first + pack.count - 1);
    const ivec_t column = offset / channels;
    *channel = offset - column * channels;
    return column;
}

/* True when all floats are in the row and their taps up to `reach` pixels away need no
 * clamping (first column >= reach, last column < width - reach): the pack's neighbours
 * are then VEC consecutive floats too. */
INLINE bool pack_is_interior(const pack_t pack, int reach, int width, int channels)
{
    return pack.count == VEC && pack.first >= reach * channels
           && pack.first + VEC <= (width - reach) * channels;
}

/* The pack's neighbour `dx` pixels to the right in `row` (left for dx < 0), clamped. */
INLINE vec_t load_pack(global const float *row, const pack_t pack, int dx, int width,
                       int channels, bool interior)
{
    if (interior)
    {
        global const float *start = row + pack.first + dx * channels;
#if VEC > 1
        if (pack.aligned) return *(global const vec_t *)start;
#endif
        return vload_vec(0, start);
    }
    ivec_t channel;
    const ivec_t column = pack_columns(pack, channels, &channel);
    const ivec_t index = clamp(column + dx, 0, width - 1) * channels + channel;
    return GATHER(row, index);
}

INLINE void store_pack(global float *row, const pack_t pack, vec_t value)
{
    if (pack.count == VEC)
    {
#if VEC > 1
        if (pack.aligned)
        {
            *(global vec_t *)(row + pack.first) = value;
            return;
        }
#endif
        vstore_vec(value, 0, row + pack.first);
        return;
    }
    float values[VEC];
    vstore_vec(value, 0, values);
    for (int e = 0; e < pack.count; e++) row[pack.first + e] = values[e];
}
