// OHIF's configuration for radseg's browser test (tests/browser/test_ohif_browser.py): the
// prebuilt @ohif/app viewer (tools/ohif/dist, `make ohif`) reads the test Orthanc's DICOMweb
// through the test's own server, which serves this file in place of dist/app-config.js and
// relays /dicom-web to Orthanc (same origin: no CORS).
window.config = {
  routerBasename: null,
  extensions: [],
  modes: [],
  showStudyList: true,
  maxNumberOfWebWorkers: 1,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: "never" },
  defaultDataSourceName: "orthanc",
  dataSources: [
    {
      namespace: "@ohif/extension-default.dataSourcesModule.dicomweb",
      sourceName: "orthanc",
      configuration: {
        friendlyName: "radseg test Orthanc",
        name: "orthanc",
        wadoUriRoot: "/dicom-web",
        qidoRoot: "/dicom-web",
        wadoRoot: "/dicom-web",
        qidoSupportsIncludeField: false,
        imageRendering: "wadors",
        thumbnailRendering: "wadors",
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: "bulkdata,video",
        bulkDataURI: { enabled: true, relativeResolution: "studies" },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
