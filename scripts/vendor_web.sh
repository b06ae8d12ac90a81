#!/usr/bin/env bash
# Copy the JavaScript the built site serves itself (so that it works with no network) out of
# node_modules/ into DEST/vendor/. _config.yml ships DEST through Sphinx's html_extra_path (not
# _static/, whose scripts Jupyter Book would add to every page) and points mathjax_path and
# nb_ipywidgets_js at the copies. About 7 MB:
#   vendor/mathjax/   MathJax 3 (es5/): tex-chtml.js, its CHTML fonts and the TeX extensions
#                     it autoloads (a missing one stops a whole page from typesetting)
#   vendor/widgets/   @jupyter-widgets/html-manager dist/embed-amd.js, its fonts, and the
#                     set-up script (scripts/web/widgets-setup.js) that lets
#                     those fonts resolve and lets widgets typeset their labels with MathJax 3
#   vendor/require.js RequireJS, which embed-amd.js needs
# Usage: scripts/vendor_web.sh DEST
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ $# = 1 ] || die "usage: scripts/vendor_web.sh DEST"
DEST="$1"
NM="$ROOT/node_modules"
[ -f "$NM/.setup-stamp" ] || die "$NM is missing; run scripts/setup.sh (make book does)"

mj="$NM/mathjax"
wm="$NM/@jupyter-widgets/html-manager"
grep -q '"version": "3\.' "$mj/package.json" || die "expected MathJax 3 in $mj (version 4 has another layout)"

out="$DEST/vendor"
rm -rf "$out"
mkdir -p "$out/mathjax/output/chtml" "$out/mathjax/input/tex" "$out/widgets"

cp "$mj/es5/tex-chtml.js" "$mj/LICENSE" "$out/mathjax/"
cp -r "$mj/es5/output/chtml/fonts" "$out/mathjax/output/chtml/"
cp -r "$mj/es5/input/tex/extensions" "$out/mathjax/input/tex/"

cp "$wm/dist/embed-amd.js" "$wm/dist/"*.{woff,woff2,ttf,eot,svg} "$out/widgets/"
cp "$wm/LICENSE" "$out/widgets/"
cp "$ROOT/scripts/web/widgets-setup.js" "$out/widgets/setup.js"

cp "$NM/requirejs/require.js" "$out/require.js"

say "--- vendored web assets into $out ($(du -sh "$out" | cut -f1))"
