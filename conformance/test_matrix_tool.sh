#!/usr/bin/env bash
# test_matrix_tool.sh — self-test of conformance/tools/clause-matrix (run by make check).
#
# Feeds the tool a small fake spec, fake test sources, fake cmocka XML and a
# fake runner manifest, and asserts the rows of clauses.tsv: a pass, a fail, a
# gap, an n/a with its reason, a program that crashed (its tests fail as not
# run), a program that hung, one that did not build, a test registered but
# absent from the results, a sanitizer-style failure after all tests passed,
# a skipped test, cmocka XML made invalid by an unescaped message, that
# an n/a row without a reason is refused, and that a tag naming a clause the
# spec does not have fails the run, and that WATCHER_TESTS expands to one
# test per watcher with its own tags. KEEP_TMP=1 keeps the fake tree.
set -u
here=$(cd "$(dirname "$0")" && pwd)
tool="$here/tools/clause-matrix"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/matrix-selftest.XXXXXX")
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT

failures=0 checks=0
ok() { checks=$((checks + 1)); echo "ok - $1"; }
not_ok() { checks=$((checks + 1)); failures=$((failures + 1)); echo "NOT OK - $1"; }

# expect_row CLAUSE WATCHER STATUS [TESTS [NOTE-SUBSTRING]]
expect_row() {
    local line
    line=$(awk -F'\t' -v c="$1" -v w="$2" '$1 == c && $2 == w' "$out/clauses.tsv")
    if [ -z "$line" ]; then not_ok "row $1 $2 exists"; return; fi
    # (read would merge the empty fields: tab is an IFS whitespace)
    status=$(cut -f3 <<<"$line") tests=$(cut -f4 <<<"$line") note=$(cut -f5 <<<"$line")
    if [ "$status" != "$3" ]; then not_ok "row $1 $2: status $status, expected $3 ($line)"; return; fi
    if [ $# -ge 4 ] && [ "$tests" != "$4" ]; then not_ok "row $1 $2: tests '$tests', expected '$4'"; return; fi
    if [ $# -ge 5 ] && [[ "$note" != *"$5"* ]]; then not_ok "row $1 $2: note '$note' lacks '$5'"; return; fi
    ok "row $1 $2 is $3"
}
expect_no_row() {
    if awk -F'\t' -v c="$1" -v w="$2" '$1 == c && $2 == w { found = 1 } END { exit !found }' "$out/clauses.tsv"; then
        not_ok "no row $1 $2"
    else
        ok "no row $1 $2"
    fi
}

# ---- the fake tree
mkdir -p "$tmp/src" "$tmp/res/junit" "$tmp/res/logs"
cat >"$tmp/CLAUSES.md" <<'EOF'
# Normative clauses
## Policy (POL)
- POL-1 doc: the first policy clause.
- POL-2 ref: the second policy clause.
## Child watcher interface (CW)
- CW-1 doc: a clause for every watcher.
- CW-2 doc: a clause that one watcher cannot honour.
## SafeChildWatcher (SAF)
- SAF-1 doc: a clause of one watcher.
- SAF-2 ref (3.12+): another, whose program hung.
## Subprocess (SUB)
- SUB-1: tested per watcher only.
- SUB-2: tested by a program that did not build.
EOF

cat >"$tmp/src/test_alpha.c" <<'EOF'
static void t_pass(void **state) { (void)state; }
/* CLAUSE_TEST(t_commented, "POL-1"), is not a registration */
int main(void)
{
    const struct CMUnitTest tests[] = {
        CLAUSE_TEST(t_pass, "POL-1"),
        CLAUSE_TEST(t_fail, "POL-2"),
        WATCHER_TEST(t_cw, safe, "CW-1 " "SUB-1"),   // split literal
        WATCHER_TEST(t_cw, fast, "CW-1"),
        CLAUSE_TEST_SETUP(t_lost, setup, NULL, "POL-1"),
#if 0
        CLAUSE_TEST(t_disabled, "POL-2"),
#endif
    };
    return cmocka_run_group_tests_name("alpha", tests, NULL, NULL);
}
EOF
cat >"$tmp/res/junit/test_alpha--alpha.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8" ?>
<testsuites>
  <testsuite name="alpha" time="0.001" tests="4" failures="1" errors="0" skipped="0" >
    <testcase name="t_pass [POL-1]" time="0.000" >
    </testcase>
    <testcase name="t_fail [POL-2]" time="0.000" >
      <failure><![CDATA[0x1 != 0x2
test_alpha.c:10: error: Failure!]]></failure>
    </testcase>
    <testcase name="t_cw@safe [CW-1 SUB-1]" time="0.000" >
    </testcase>
    <testcase name="t_cw@fast [CW-1]" time="0.000" >
    </testcase>
  </testsuite>
</testsuites>
EOF
echo "ERROR: t_fail says why" >"$tmp/res/logs/test_alpha.log"

# beta crashed before writing any XML: its registered test fails as not run.
cat >"$tmp/src/test_beta.c" <<'EOF'
    CLAUSE_TEST(t_beta, "SAF-1"),
EOF
echo "Segmentation fault" >"$tmp/res/logs/test_beta.log"
# gamma hung and was killed; delta did not build.
cat >"$tmp/src/test_gamma.c" <<'EOF'
    WATCHER_TEST(t_gamma, safe, "SAF-2"),
EOF
cat >"$tmp/src/test_delta.c" <<'EOF'
    CLAUSE_TEST(t_delta, "SUB-2"),
EOF
# epsilon: every test passed, then the program failed (a sanitizer report).
cat >"$tmp/src/test_epsilon.c" <<'EOF'
    WATCHER_TEST(t_eps, threaded, "CW-1"),
EOF
cat >"$tmp/res/junit/test_epsilon--eps.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8" ?>
<testsuites>
  <testsuite name="eps" time="0.001" tests="1" failures="0" errors="0" skipped="0" >
    <testcase name="t_eps@threaded [CW-1]" time="0.000" >
    </testcase>
  </testsuite>
</testsuites>
EOF

{
    printf 'program\tkind\tpath\trc\toutcome\tseconds\tlog\n'
    printf 'test_alpha\tcmocka\tx/test_alpha\t1\texit\t0.10\t%s\n' "$tmp/res/logs/test_alpha.log"
    printf 'test_beta\tcmocka\tx/test_beta\t139\tsignal\t0.20\t%s\n' "$tmp/res/logs/test_beta.log"
    printf 'test_gamma\tcmocka\tx/test_gamma\t124\ttimeout\t300.00\t\n'
    printf 'test_delta\tcmocka\tx/test_delta\t\tunbuilt\t0\t\n'
    printf 'test_epsilon\tcmocka\tx/test_epsilon\t23\texit\t0.30\t\n'
    printf 'example_ok\tplain\tx/example_ok\t0\tok\t0.01\t\n'
    printf 'example_bad\tplain\tx/example_bad\t3\texit\t0.01\t\n'
} >"$tmp/res/runs.tsv"

printf 'clause\twatcher\treason\n# comment\nCW-2\tsafe\tSafe has no such mechanism (written reason)\n' >"$tmp/na.tsv"

# ---- run 1: the full fake set
out="$tmp/out1"
"$tool" --clauses "$tmp/CLAUSES.md" --sources "$tmp/src" --na "$tmp/na.tsv" \
    --results "$tmp/res" --out "$out" >"$tmp/stdout1" 2>&1
rc=$?
[ $rc = 1 ] && ok "exit status 1 on failures" || not_ok "exit status $rc, expected 1"
# t_pass, t_cw@safe, t_cw@fast, t_eps, example_ok pass; t_fail, t_lost (absent),
# t_beta (crashed), t_gamma (hung), t_delta (not built), epsilon's exit,
# example_bad fail.
last=$(tail -n 1 "$tmp/stdout1")
[ "$last" = "5 passed, 7 failed" ] && ok "closing line: $last" || not_ok "closing line '$last', expected '5 passed, 7 failed'"
expect_row POL-1 - fail "t_pass,t_lost" "absent from the results"
expect_row POL-2 - fail "t_fail" "failed: t_fail"
expect_row CW-1 safe pass "t_cw@safe"
expect_row CW-1 fast pass "t_cw@fast"
expect_row CW-1 threaded pass "t_eps@threaded"
expect_row CW-1 multiloop gap "" "no test"
expect_row CW-1 pidfd gap
expect_row CW-2 safe n/a "" "Safe has no such mechanism (written reason)"
expect_row CW-2 threaded gap
expect_row SAF-1 safe fail "t_beta" "crashed (SIGSEGV)"
expect_row SAF-2 safe fail "t_gamma@safe" "timed out"
expect_row SUB-1 safe pass "t_cw@safe"
expect_no_row SUB-1 -
expect_row SUB-2 - fail "t_delta" "did not build"
if grep -q 't_commented\|t_disabled' "$out/clauses.tsv"; then not_ok "comments and #if 0 are not registrations"; else ok "comments and #if 0 are not registrations"; fi
grep -q "test_epsilon.*after all its tests passed" "$tmp/stdout1" && ok "failure after passing tests is reported" || not_ok "failure after passing tests is reported"
grep -q "ERROR: t_fail says why" "$tmp/stdout1" && ok "program output shown with failures" || not_ok "program output shown with failures"
grep -qE '^  POL +Policy +2 +2 +0 +2 +0 +0$' "$tmp/stdout1" && ok "family table POL row" || not_ok "family table POL row: $(grep '^  POL' "$tmp/stdout1")"
if python3 -c 'import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
assert r.tag == "testsuites" and r.get("tests") == "12", r.attrib
assert int(r.get("failures")) + int(r.get("errors")) == 7, r.attrib' "$out/conformance.xml"; then
    ok "conformance.xml is valid JUnit XML with 12 cases"
else
    not_ok "conformance.xml is valid JUnit XML with 12 cases"
fi
grep -q 'class="s na"' "$out/clauses.html" && grep -q "written reason" "$out/clauses.html" &&
    ! grep -qi '<script\|<link\|https\?://' "$out/clauses.html" &&
    ok "clauses.html is self-contained and shows the n/a reason" || not_ok "clauses.html"

# ---- run 2: an n/a row without a reason is an error
printf 'clause\twatcher\treason\nCW-2\tsafe\t  \n' >"$tmp/na-bad.tsv"
"$tool" --clauses "$tmp/CLAUSES.md" --sources "$tmp/src" --na "$tmp/na-bad.tsv" \
    --results "$tmp/res" --out "$tmp/out2" >"$tmp/stdout2" 2>&1
rc=$?
[ $rc = 2 ] && grep -q "has no reason" "$tmp/stdout2" && ok "n/a row without reason refused" ||
    not_ok "n/a row without reason refused (exit $rc: $(cat "$tmp/stdout2"))"

# ---- run 3: everything passes but gaps remain: fails unless --allow-gaps
mkdir -p "$tmp/src3" "$tmp/res3/junit"
cp "$tmp/src/test_epsilon.c" "$tmp/src3/"
cp "$tmp/res/junit/test_epsilon--eps.xml" "$tmp/res3/junit/"
out="$tmp/out3"
"$tool" --clauses "$tmp/CLAUSES.md" --sources "$tmp/src3" --na "$tmp/na.tsv" \
    --results "$tmp/res3" --out "$out" >"$tmp/stdout3" 2>&1
rc=$?
[ $rc = 1 ] && ok "gaps fail by default" || not_ok "gaps fail by default (exit $rc)"
"$tool" --clauses "$tmp/CLAUSES.md" --sources "$tmp/src3" --na "$tmp/na.tsv" \
    --results "$tmp/res3" --out "$out" --allow-gaps >"$tmp/stdout3" 2>&1
rc=$?
[ $rc = 0 ] && ok "--allow-gaps passes" || not_ok "--allow-gaps passes (exit $rc)"
[ "$(tail -n 1 "$tmp/stdout3")" = "1 passed, 0 failed" ] && ok "closing line with gaps only" || not_ok "closing line: $(tail -n 1 "$tmp/stdout3")"
expect_row CW-1 threaded pass "t_eps@threaded"
expect_row POL-1 - gap

# ---- run 4: cmocka does not escape messages: "]]>" and control characters
# make its file invalid XML, which must still be read; a skipped test
# proves nothing.
mkdir -p "$tmp/src4" "$tmp/res4/junit"
printf '    CLAUSE_TEST(t_odd, "POL-1"),\n    CLAUSE_TEST(t_skip, "POL-2"),\n' >"$tmp/src4/test_zeta.c"
printf '<?xml version="1.0" encoding="UTF-8" ?>\n<testsuites>\n  <testsuite name="zeta" time="0.000" tests="2" failures="1" errors="0" skipped="1" >\n    <testcase name="t_odd [POL-1]" time="0.000" >\n      <failure><![CDATA["a]]>b\001" != "c"\nt.c:3: error: Failure!]]></failure>\n    </testcase>\n    <testcase name="t_skip [POL-2]" time="0.000" >\n      <skipped/>\n    </testcase>\n  </testsuite>\n</testsuites>\n' >"$tmp/res4/junit/test_zeta--zeta.xml"
out="$tmp/out4"
"$tool" --clauses "$tmp/CLAUSES.md" --sources "$tmp/src4" --na "$tmp/na.tsv" \
    --results "$tmp/res4" --out "$out" --allow-gaps >"$tmp/stdout4" 2>&1
rc=$?
[ $rc = 1 ] && ok "invalid XML read: exit 1" || not_ok "invalid XML read: exit $rc ($(cat "$tmp/stdout4"))"
expect_row POL-1 - fail "t_odd" "failed: t_odd"
expect_row POL-2 - gap "t_skip" "every test skipped"
[ "$(tail -n 1 "$tmp/stdout4")" = "0 passed, 1 failed" ] && ok "a skipped test is neither passed nor failed" ||
    not_ok "closing line: $(tail -n 1 "$tmp/stdout4")"
python3 -c 'import sys, xml.etree.ElementTree as ET; ET.parse(sys.argv[1])' "$out/conformance.xml" &&
    ok "merged XML valid despite invalid input" || not_ok "merged XML valid despite invalid input"

# ---- run 5: a tag that names a clause the spec does not have fails the run
# (every clause the suite tags must exist in the spec), even when all pass.
mkdir -p "$tmp/src5" "$tmp/res5/junit"
printf '    CLAUSE_TEST(t_ghost, "POL-1 POL-99"),\n' >"$tmp/src5/test_eta.c"
printf '<?xml version="1.0" encoding="UTF-8" ?>\n<testsuites>\n  <testsuite name="eta" time="0.000" tests="1" failures="0" errors="0" skipped="0" >\n    <testcase name="t_ghost [POL-1 POL-99]" time="0.000" >\n    </testcase>\n  </testsuite>\n</testsuites>\n' >"$tmp/res5/junit/test_eta--eta.xml"
"$tool" --clauses "$tmp/CLAUSES.md" --sources "$tmp/src5" --na "$tmp/na.tsv" \
    --results "$tmp/res5" --out "$tmp/out5" >"$tmp/stdout5" 2>&1
rc=$?
[ $rc = 1 ] && grep -q "tag POL-99 names no clause of $tmp/CLAUSES.md (in t_ghost" "$tmp/stdout5" &&
    ok "a tag naming no clause of the spec fails" ||
    not_ok "a tag naming no clause of the spec fails (exit $rc: $(cat "$tmp/stdout5"))"

# ---- run 6: WATCHER_TESTS registers one test per watcher of its bits; a tag
# "ID@kind" belongs to that kind's test only; a variant missing from the
# results fails as not run; an unknown bit makes the registration unreadable.
mkdir -p "$tmp/src6" "$tmp/res6/junit"
cat >"$tmp/src6/test_theta.c" <<'EOF6'
    const harness_test tests[] = {
        WATCHER_TESTS(t_var, W_SAFE | W_PIDFD,
            "CW-1 SAF-1@safe"),
        WATCHER_TESTS(t_all, W_ALL, "SUB-1"),
        WATCHER_TESTS(t_bad, W_NONE, "SUB-2"),
    };
EOF6
{
    printf '<?xml version="1.0" encoding="UTF-8" ?>\n<testsuites>\n'
    printf '  <testsuite name="theta" time="0.000" tests="6" failures="0" errors="0" skipped="0" >\n'
    for name in "t_var@safe [CW-1 SAF-1]" "t_var@pidfd [CW-1]" "t_all@threaded [SUB-1]" \
        "t_all@multiloop [SUB-1]" "t_all@safe [SUB-1]" "t_all@pidfd [SUB-1]"; do
        printf '    <testcase name="%s" time="0.000" >\n    </testcase>\n' "$name"
    done
    printf '  </testsuite>\n</testsuites>\n'
} >"$tmp/res6/junit/test_theta--theta.xml"
out="$tmp/out6"
"$tool" --clauses "$tmp/CLAUSES.md" --sources "$tmp/src6" --na "$tmp/na.tsv" \
    --results "$tmp/res6" --out "$out" --allow-gaps >"$tmp/stdout6" 2>&1
rc=$?
[ $rc = 1 ] && ok "WATCHER_TESTS: a missing variant fails the run" || not_ok "WATCHER_TESTS: exit $rc, expected 1"
expect_row CW-1 safe pass "t_var@safe"
expect_row CW-1 pidfd pass "t_var@pidfd"
expect_row SAF-1 safe pass "t_var@safe"
expect_row CW-1 fast gap
expect_row SUB-1 threaded pass "t_all@threaded"
expect_row SUB-1 pidfd pass "t_all@pidfd"
expect_row SUB-1 fast fail "t_all@fast" "absent from the results"
[ "$(tail -n 1 "$tmp/stdout6")" = "6 passed, 1 failed" ] && ok "WATCHER_TESTS: closing line" ||
    not_ok "WATCHER_TESTS: closing line: $(tail -n 1 "$tmp/stdout6")"
grep -q "test_theta.c:5: registration not readable" "$tmp/stdout6" &&
    ok "WATCHER_TESTS with an unknown bit is reported unreadable" ||
    not_ok "WATCHER_TESTS with an unknown bit is reported unreadable: $(cat "$tmp/stdout6")"

echo "$((checks - failures)) of $checks checks passed"
[ $failures = 0 ]
