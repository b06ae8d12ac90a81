// Loaded on pages that show widgets, after require.js and before embed-amd.js (the order of
// nb_ipywidgets_js in _config.yml). Two adjustments so that the embedded widgets work offline
// next to MathJax 3:
(function () {
  // 1. The widget manager's webpack chunks find their fonts (Font Awesome) next to the URL
  //    that RequireJS gives the module "@jupyter-widgets/html-manager/dist/libembed-amd".
  //    Point that module at this folder, where scripts/vendor_web.sh put the fonts.
  var here = document.currentScript.src.replace(/\/[^/]*$/, "");
  window.require.config({ paths: { "@jupyter-widgets/html-manager/dist": here } });

  // 2. ipywidgets' controls typeset their descriptions with the MathJax 2 API
  //    (MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])); the book loads MathJax 3.
  //    Give every MathJax object a Hub whose Queue typesets with MathJax 3 once it is ready.
  //    MathJax 3 replaces window.MathJax (the configuration object) with itself when it loads,
  //    so the Hub is attached through a setter rather than once.
  var hub = {
    Queue: function (job) {
      var mj = window.MathJax;
      var element = job && job[2];
      if (!mj || !mj.startup || !mj.startup.promise) return;
      mj.startup.promise
        .then(function () { return mj.typesetPromise(element ? [element] : undefined); })
        .catch(function (err) { console.warn("MathJax could not typeset a widget:", err); });
    },
  };
  var current = window.MathJax;
  function withHub(mj) {
    if (mj && typeof mj === "object" && !mj.Hub) mj.Hub = hub;
    return mj;
  }
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    enumerable: true,
    get: function () { return current; },
    set: function (value) { current = withHub(value); },
  });
  current = withHub(current);
})();
