"""Rasterise an RTSTRUCT with dicompyler-core, the way its DVH calculation does it.

Run in the venv of tools/rt-reader/requirements.txt (``make rt-reader`` → ``.venv-rt``), never
radseg's: dicompyler-core needs pydicom 2. Usage::

    python rasterise.py RTSTRUCT.dcm OUT.npz CT_1.dcm CT_2.dcm ...

writes ``OUT.npz`` with one bool array ``(slices, rows, columns)`` per ROI name, slices in the
order of the CT files given. Each ROI's planes are matched to a CT slice by z (dicompyler-core
supports axial series only); each contour is filled by ``dvhcalc.get_contour_mask`` (matplotlib
point-in-polygon at the pixel centres of the CT's ``GetPatientToPixelLUT``) and the contours of
one plane are combined by XOR, as ``dvhcalc.calculate_plane_histogram`` does, so a hole contour
cuts a hole.
"""

import sys

import numpy as np
from dicompylercore import dicomparser, dvhcalc


def main(rtstruct, out, ct_files):
    slices = []
    for instance in ct_files:
        image = dicomparser.DicomParser(instance)
        x_lut, y_lut = image.GetPatientToPixelLUT()
        x, y = np.meshgrid(np.asarray(x_lut), np.asarray(y_lut))
        points = np.vstack((x.ravel(), y.ravel())).T
        grid = {"lut": (x_lut, y_lut), "x_lut_index": 0}
        z = float(image.ds.ImagePositionPatient[2])
        slices.append((z, points, grid, (int(image.ds.Rows), int(image.ds.Columns))))
    shape = (len(slices), *slices[0][3])
    structure_set = dicomparser.DicomParser(rtstruct)
    masks = {}
    for roi, structure in structure_set.GetStructures().items():
        mask = np.zeros(shape, dtype=bool)
        for z_key, plane in structure_set.GetStructureCoordinates(roi).items():
            matches = [k for k, s in enumerate(slices) if abs(s[0] - float(z_key)) < 1e-2]
            if len(matches) != 1:
                sys.exit(f"ROI {structure['name']}: plane z={z_key} matches {len(matches)} slices")
            k = matches[0]
            _, points, grid, _ = slices[k]
            for contour in plane:
                xy = [p[0:2] for p in contour["data"]]
                mask[k] ^= dvhcalc.get_contour_mask(grid, roi, points, xy)
        masks[structure["name"]] = mask
    np.savez(out, **masks)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit("usage: rasterise.py RTSTRUCT.dcm OUT.npz CT.dcm...")
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
