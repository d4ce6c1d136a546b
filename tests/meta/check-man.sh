#!/usr/bin/env bash
# check-man.sh - lint the manual pages and tie them to the header (the idea
# of curl's test 1173).  Checks, each problem on its own FAIL line:
#
#   1. every page renders with `groff -t -man -ww -z` (and `mandoc -Tlint
#      -W warning` when mandoc is installed) without a single warning;
#   2. every ".so" alias page holds only its .so line and names an existing
#      page that is not itself an alias;
#   3. every WCACHE_API function of include/watchcache.h has a page or an
#      alias man/man3/FUNCTION.3, is named in that page's NAME section and
#      has its prototype in its SYNOPSIS; every alias names a function;
#   4. every WCACHE_E* code (and WCACHE_OK) has its own ".B CODE" entry in
#      libwatchcache-errors.3;
#   5. man3 pages have the sections of STYLE.md 5.10 in order: function
#      pages all of them, overview pages (libwatchcache*) a subset;
#   6. the C code of every EXAMPLE, marked by the comment lines
#      .\" example-begin  and  .\" example-end  around its .EX/.EE block,
#      compiles with cc -std=c11 -Wall -Wextra -Werror -Iinclude
#      -fsyntax-only (roff escapes \e \- \(aq \(dq \& are undone first).
#   7. every reference NAME(N) to a page of the project (wcache*,
#      libwatchcache*, watchcache, wcsnap) names an existing page.
. "$(dirname "$0")/common.inc"
make_tmpdir

MAN=man
CC=${CC:-cc}
SECTIONS="NAME LIBRARY SYNOPSIS DESCRIPTION OWNERSHIP THREAD_SAFETY RETURN_VALUE ERRORS EXAMPLE SEE_ALSO HISTORY"

command -v groff >/dev/null 2>&1 || {
    echo "FAIL: groff is not installed (Debian: apt-get install groff-base)"
    exit 1
}

mapfile -t PAGES < <(find "$MAN" -type f -name '*.[1-8]' | LC_ALL=C sort)
[ "${#PAGES[@]}" -gt 0 ] || { echo "FAIL: no pages under $MAN/"; exit 1; }

# The target of an alias page (empty for a real page).  Comment lines may
# precede the .so line.
so_target() { sed -n 's/^\.so[[:space:]]\{1,\}\([^[:space:]]*\).*/\1/p' "$1" | head -n 1; }
# The lines of section $2 of page $1.
section() { awk -v s="$2" '/^\.SH/ { on = ($0 ~ "^\\.SH[ \t]+\"?" s "\"?[ \t]*$"); next } on' "$1"; }

# --- 1, 2: rendering and aliases -----------------------------------------------
aliases=0
for p in "${PAGES[@]}"; do
    t=$(so_target "$p")
    if [ -n "$t" ]; then
        aliases=$((aliases + 1))
        n=$(grep -v '^\.\\"' "$p" | grep -cv '^[[:space:]]*$' || true)
        [ "$n" -eq 1 ] || problem "$p: an alias page holds only its .so line"
        if [ ! -f "$MAN/$t" ]; then
            problem "$p: .so $t: no such page"
        elif [ -n "$(so_target "$MAN/$t")" ]; then
            problem "$p: .so $t: that page is an alias itself"
        fi
        continue
    fi
    # groff resolves .so against its working directory, as man(1) does
    # against the manual's root: run it in man/.
    out=$(cd "$MAN" && groff -t -man -ww -z "${p#"$MAN"/}" 2>&1) || true
    [ -z "$out" ] || problem "$p: groff: $out"
    if command -v mandoc >/dev/null 2>&1; then
        out=$(mandoc -Tlint -W warning "$p" 2>&1) || true
        [ -z "$out" ] || problem "$p: mandoc: $out"
    fi
done

# --- 3: every public function has a page ---------------------------------------
mapfile -t FUNCS < <(header_functions)
[ "${#FUNCS[@]}" -gt 0 ] || problem "no WCACHE_API function found in $HDR"
for f in "${FUNCS[@]}"; do
    p=$MAN/man3/$f.3
    if [ ! -f "$p" ]; then
        problem "$f: no page or alias $p"
        continue
    fi
    t=$(so_target "$p")
    [ -z "$t" ] || p=$MAN/$t
    [ -f "$p" ] || continue # reported above
    # (here-strings, not pipes: grep -q would SIGPIPE the writer under pipefail)
    grep -qw -- "$f" <<<"$(section "$p" NAME)" || problem "$f: not in the NAME section of $p"
    grep -q -- "[^A-Za-z0-9_]$f(" <<<"$(section "$p" SYNOPSIS)" ||
        problem "$f: no prototype in the SYNOPSIS of $p"
done
for p in "$MAN"/man3/*.3; do
    [ -n "$(so_target "$p")" ] || continue
    b=$(basename "$p" .3)
    grep -qx -- "$b" <<<"$(printf '%s\n' "${FUNCS[@]}")" || problem "$p: an alias for $b, which $HDR does not declare"
done

# --- 4: every status code is described -------------------------------------------
ERRPAGE=$MAN/man3/libwatchcache-errors.3
mapfile -t CODES < <(header_error_codes)
if [ -f "$ERRPAGE" ]; then
    for e in WCACHE_OK "${CODES[@]}"; do
        grep -qx -- "\\.B $e" "$ERRPAGE" || problem "$e: no '.B $e' entry in $ERRPAGE"
    done
else
    problem "$ERRPAGE is missing"
fi

# --- 5: section order -------------------------------------------------------------
for p in "$MAN"/man3/*.3; do
    [ -z "$(so_target "$p")" ] || continue
    got=$(sed -n 's/^\.SH[[:space:]]\{1,\}//p' "$p" | tr -d '"' | tr ' ' '_' | xargs)
    want=$SECTIONS
    case $(basename "$p") in
    libwatchcache*) # an overview page: the sections it has, in the usual order
        want=$(for s in $SECTIONS; do grep -qx -- "$s" <<<"${got// /$'\n'}" && echo "$s"; done | xargs)
        extra=$(for s in $got; do grep -qw -- "$s" <<<"$SECTIONS" || echo "$s"; done | xargs)
        [ -z "$extra" ] || problem "$p: sections not in STYLE.md 5.10: $extra"
        ;;
    esac
    [ "$got" = "$want" ] || problem "$p: sections are '$got', want '$want'"
done

# --- 7 (before 6, which is slow): cross-references to the project's pages resolve -------------------------
# ".BR wcache_view (3)" and the like, in any page: the page must exist.
refs=0
for p in "${PAGES[@]}"; do
    [ -z "$(so_target "$p")" ] || continue
    while read -r name sec; do
        refs=$((refs + 1))
        [ -f "$MAN/man$sec/$name.$sec" ] || problem "$p: refers to $name($sec), which has no page"
    done < <(grep -o '\(wcache\|libwatchcache\|watchcache\|wcsnap\)[A-Za-z0-9_\\-]* ([1-8])' "$p" |
             sed 's/\\-/-/g; s/ (\([1-8]\))$/ \1/' | sort -u)
done

# --- 6: examples compile ---------------------------------------------------------
examples=0
for p in "${PAGES[@]}"; do
    [ -z "$(so_target "$p")" ] || continue
    base=$TMPD/$(basename "$p")
    if ! awk -v base="$base" '
        /^\.\\" example-begin/ { if (on) exit 1; n++; on = 1; f = base "-" n ".c"; printf "" > f; next }
        /^\.\\" example-end/   { if (!on) exit 1; on = 0; close(f); next }
        on && /^[.\047]/       { next }   # requests: .EX .EE comments
        on                     { print > f }
        END                    { if (on) exit 1 }
    ' "$p"; then
        problem "$p: example-begin/example-end markers do not pair up"
        continue
    fi
    for c in "$base"-*.c; do
        [ -f "$c" ] || continue
        examples=$((examples + 1))
        sed -i -e 's/\\-/-/g' -e "s/\\\\(aq/'/g" -e 's/\\(dq/"/g' -e 's/\\&//g' -e 's/\\e/\\/g' "$c"
        if ! out=$("$CC" -std=c11 -Wall -Wextra -Werror -Iinclude -fsyntax-only "$c" 2>&1); then
            problem "$p: example $(basename "$c" .c | sed 's/.*-//') does not compile:"
            printf '%s\n' "$out" | sed 's/^/    /'
        fi
    done
done
[ "$examples" -gt 0 ] || problem "no page has a marked example"

finish "${#PAGES[@]} pages ($aliases aliases), ${#FUNCS[@]} functions, ${#CODES[@]} codes, $refs references, $examples examples"
