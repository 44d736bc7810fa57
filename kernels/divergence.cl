/* Divergence check: the largest magnitude of an image, reduced on the device so that only
 * one float per work-group is downloaded (see napari_diffuse.plan.divergence_checks).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 *
 * out[group] = max |data[i]| over the items the group strides over; NaN counts as +inf, so
 * that max(out) > bound, or is infinite, exactly when numpy.max(data) is NaN, infinite or
 * above the bound. The work-group size must be a power of two (`scratch` holds one float
 * per work item).
 */

kernel void peak(global const float *data, int n, global float *out, local float *scratch)
{
    const int lid = get_local_id(0), size = get_local_size(0);
    float top = 0.0f;
    for (int i = get_global_id(0); i < n; i += get_global_size(0))
    {
        const float v = data[i];
        top = isnan(v) ? INFINITY : fmax(top, fabs(v));
    }
    scratch[lid] = top;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = size / 2; s > 0; s >>= 1)
    {
        if (lid < s) scratch[lid] = fmax(scratch[lid], scratch[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) out[get_group_id(0)] = scratch[0];
}
