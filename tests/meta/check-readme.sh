#!/usr/bin/env bash
# check-readme.sh - README.md stays true to the tree:
#
#   1. its C example is examples/c/quickstart.c, byte for byte (the fenced
#      ```c block whose first line names quickstart.c);
#   2. its quick start is exactly the two commands `make demo` and
#      `make check` (the first fenced ```sh block);
#   3. every relative link ](path) names a file or directory of the tree.
. "$(dirname "$0")/common.inc"
make_tmpdir

README=README.md
QS=examples/c/quickstart.c
need_file "$README"
need_file "$QS"

# 1. the example
awk '
    /^```c[[:space:]]*$/ && !done { on = 1; first = 1; next }
    on && /^```[[:space:]]*$/     { on = 0; if (keep) done = 1; next }
    on && first                   { first = 0; keep = ($0 ~ /quickstart\.c/) ; buf = "" }
    on && keep                    { print }
' "$README" >"$TMPD/readme.c"
if [ ! -s "$TMPD/readme.c" ]; then
    problem "$README has no \`\`\`c block that begins with the quickstart.c comment"
elif ! diff -u "$QS" "$TMPD/readme.c" >"$TMPD/diff"; then
    problem "the C example of $README differs from $QS (diff -u $QS README):"
    sed 's/^/    /' "$TMPD/diff"
fi

# 2. the quick start
awk '/^```sh[[:space:]]*$/ { on = 1; next } on && /^```/ { exit } on' "$README" >"$TMPD/qs"
printf 'make demo\nmake check\n' >"$TMPD/want"
diff -q "$TMPD/want" "$TMPD/qs" >/dev/null ||
    problem "the first \`\`\`sh block of $README is not exactly 'make demo' and 'make check'"

# 3. relative links
links=0
while read -r target; do
    links=$((links + 1))
    [ -e "${target%%#*}" ] || problem "$README links to $target, which does not exist"
done < <(grep -o '](\([^)]*\))' "$README" | sed 's/^](\(.*\))$/\1/' |
         grep -v -e '^[a-z][a-z0-9+.-]*:' -e '^#' | sort -u)

finish "example, quick start, $links links"
