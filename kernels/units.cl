/* A caller's 8- or 16-bit integers to and from working units (float32, 0..1 nominal) on
 * the device, bit for bit as napari_diffuse.intensity.to_working and from_working compute
 * them on the host, so that an integer image crosses the bus in its own dtype and no
 * image-sized float32 copy is made on the host.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 *
 * Built on its own, with -DCALLER_T=uchar, char, ushort or short, on devices with double
 * precision (cl_khr_fp64). One work item per value.
 */

#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#pragma OPENCL FP_CONTRACT OFF

/* working = (float32(value) - offset) / scale, each step rounded to float32 as NumPy does.
 * The quotient of two floats computed in double and rounded once is the correctly rounded
 * float quotient (double carries more than 2 x 24 + 2 bits), whatever the accuracy of the
 * device's float division. `scale` (a float32 value) comes as a double argument: with both
 * operands widened floats, a compiler may narrow the division to the device's float
 * division (NVIDIA's did: 1 ulp off for 12 % of the values). */
kernel void to_working(global const CALLER_T *restrict values, global float *restrict working,
                       float offset, double scale, int n)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    const float shifted = (float)values[i] - offset;
    working[i] = (float)((double)shifted / scale);
}

/* value = clip(rint(double(working) * scale + offset), lowest, highest): rint rounds
 * halves to even, as numpy.rint. */
kernel void from_working(global const float *restrict working, global CALLER_T *restrict values,
                         double scale, double offset, double lowest, double highest, int n)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    const double value = rint((double)working[i] * scale + offset);
    values[i] = (CALLER_T)fmin(fmax(value, lowest), highest);
}
