#!/usr/bin/env node
// Reads a DICOM SEG with dcmjs (the parser OHIF uses) and prints, as JSON, what OHIF's SEG
// loader looks for: the top-level ReferencedSeriesSequence, each frame's SourceImageSequence
// (in its per-frame DerivationImageSequence, or a shared one), each frame's plane position
// and segment number, and each segment's label and colour (CIELab turned to RGB with dcmjs's
// own Colors.dicomlab2RGB, as OHIF does).
//
// Usage: node read_seg.js SEG.dcm   (exit 1 with the error on stderr if dcmjs cannot read it)
"use strict";

const fs = require("fs");
const dcmjs = require("dcmjs");

function asList(value) {
  if (value === undefined || value === null) return [];
  return Array.isArray(value) ? value : [value];
}

function sourceImages(group) {
  const refs = [];
  for (const derivation of asList(group && group.DerivationImageSequence)) {
    for (const source of asList(derivation.SourceImageSequence)) {
      refs.push({
        sopClassUID: source.ReferencedSOPClassUID || null,
        sopInstanceUID: source.ReferencedSOPInstanceUID || null,
        frameNumber: source.ReferencedFrameNumber === undefined ? null : source.ReferencedFrameNumber,
      });
    }
  }
  return refs;
}

function main(path) {
  const buffer = fs.readFileSync(path);
  const arrayBuffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  const dicomData = dcmjs.data.DicomMessage.readFile(arrayBuffer);
  const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dicomData.dict);
  const shared = asList(ds.SharedFunctionalGroupsSequence)[0] || {};
  const sharedSources = sourceImages(shared);
  const frames = asList(ds.PerFrameFunctionalGroupsSequence).map((group) => {
    const own = sourceImages(group);
    const plane = asList(group.PlanePositionSequence)[0] || asList(shared.PlanePositionSequence)[0];
    const segment = asList(group.SegmentIdentificationSequence)[0];
    return {
      sources: own.length ? own : sharedSources,
      imagePositionPatient: plane ? asList(plane.ImagePositionPatient).map(Number) : null,
      segmentNumber: segment ? segment.ReferencedSegmentNumber : null,
    };
  });
  const orientation = asList(shared.PlaneOrientationSequence)[0];
  const segments = asList(ds.SegmentSequence).map((segment) => {
    const lab = asList(segment.RecommendedDisplayCIELabValue);
    return {
      number: segment.SegmentNumber,
      label: segment.SegmentLabel === undefined ? null : segment.SegmentLabel,
      cielab: lab.length === 3 ? lab.map(Number) : null,
      rgb: lab.length === 3 ? dcmjs.data.Colors.dicomlab2RGB(lab).map((v) => Math.round(v * 255)) : null,
      algorithmType: segment.SegmentAlgorithmType || null,
    };
  });
  const referencedSeries = asList(ds.ReferencedSeriesSequence).map((series) => ({
    seriesInstanceUID: series.SeriesInstanceUID || null,
    instances: asList(series.ReferencedInstanceSequence).map((i) => i.ReferencedSOPInstanceUID),
  }));
  const summary = {
    sopClassUID: ds.SOPClassUID,
    modality: ds.Modality,
    segmentationType: ds.SegmentationType,
    studyInstanceUID: ds.StudyInstanceUID,
    frameOfReferenceUID: ds.FrameOfReferenceUID,
    rows: ds.Rows,
    columns: ds.Columns,
    numberOfFrames: Number(ds.NumberOfFrames),
    imageOrientationPatient: orientation ? asList(orientation.ImageOrientationPatient).map(Number) : null,
    referencedSeries,
    segments,
    frames,
  };
  process.stdout.write(JSON.stringify(summary));
}

if (process.argv.length !== 3) {
  process.stderr.write("usage: node read_seg.js SEG.dcm\n");
  process.exit(2);
}
try {
  main(process.argv[2]);
} catch (error) {
  process.stderr.write(`dcmjs cannot read ${process.argv[2]}: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
}
