#!/usr/bin/env bash
# Faults: runs the fault tests (tests/it/faults.rs) and the related tests
# in other modules, and prints a Markdown table of each with what was
# injected and what was lost. The fault tests report their own figures
# (`RELIABILITY|test|injected|lost` lines); the related tests are
# described below. Exits 0 only when every test passed.
# Env: SANDBOXD_KILL9_ITERATIONS (200), passed to the kill -9 test.
set -uo pipefail
cd "$(dirname "$0")/../.."

say() { echo "50-faults: $*" >&2; }

# test | injected | lost
related=(
    "upload::full_disk_is_507|work root (1 MiB tmpfs) full during a bundle and a file upload|nothing: 507 insufficient_storage, no staging dir or partial file; 201 once there is space"
    "upload::bundle::client_disconnect_leaves_nothing|client gone halfway through a bundle upload|nothing: staging dir removed, the run takes a new upload"
    "upload::bundle::limits_are_413|bundles over the compressed, extracted (gzip bomb) and entry limits|nothing: 413, nothing extracted"
    "daemon::errors_are_json|an 11 MiB JSON body, a 70 KiB header|nothing: 413 body_too_large, 431"
    "daemon::unwritable_state_dir_is_reported|a state dir below a regular file|nothing: start refused naming --state-dir"
    "daemon::every_protected_route_needs_the_key|14 routes × (no key, wrong key, wrong bearer)|nothing: 42 × 401 unauthorized"
    "daemon::daemon_is_not_dumpable|a run reads the daemon's /proc/PID/environ|nothing: permission denied"
    "callbacks::run_token_scope|a run's token on other runs and other endpoints|nothing: 403 beyond its own run, 401 once ended"
    "callbacks::a_hanging_service_is_timed_out_and_retried|receiver hangs on the first attempt|nothing: timed out, retried, delivered"
    "callbacks::service_down_for_a_while_then_back|receiver down (connection refused) for several attempts|nothing: retried until it is back, delivered once"
    "callbacks::crash_and_restart_lose_no_callback|kill -9 with callbacks pending, runs ending and a shim killed while down|nothing: each callback delivered once after the restart (the run whose shim died reported lost)"
    "secrets::hanging_server_hits_the_timeout|secret server never answers|nothing: 424 after 4 timed-out attempts, nothing started"
    "secrets::transient_failures_are_retried|secret server answers 503 and 429, then the value|nothing: retried and resolved; 424 when it keeps failing"
    "secrets::proc_environ_holds_no_key_and_sandboxd_is_unreadable|a run reads /proc environ and mem of the daemon and its shim|nothing: permission denied; no key in the run's environ"
    "secrets::secret_values_are_masked_everywhere|200 secrets written byte by byte to stdout and stderr|nothing: masked in logs, answers and the daemon's log"
    "runs::session_key_stays_out_of_children|the key in the daemon's env under three names|nothing: absent from the child's env"
    "runs::running_runs_are_reattached_after_a_crash|kill -9 of sandboxd while a run runs|nothing: re-attached, its real exit code recorded"
    "runs::runs_without_a_shim_are_lost|kill -9 of sandboxd and of the run's shim|nothing hidden: the run is lost with the reason, never running forever"
    "supervise::the_init_restarts_a_crashed_daemon_and_runs_survive|SIGKILL of the daemon under its init|nothing: restarted, the run re-attached with its exit status"
)

filters=(faults::)
for row in "${related[@]}"; do filters+=("${row%%|*}"); done

log=$(mktemp)
trap 'rm -f "$log"' EXIT
say "cargo test --test it ${filters[*]}"
cargo test --test it -- "${filters[@]}" --nocapture --test-threads 2 >"$log" 2>&1
code=$?
grep -E '^test |^RELIABILITY\||test result' "$log" >&2
# What failed, and why, for the person reading the progress.
[ "$code" = 0 ] || sed -n '/^failures:$/,$p' "$log" >&2

result() { # NAME: ok, FAILED or "not run"
    local line
    line=$(grep -E "^test $1 \.\.\. " "$log" | tail -n 1)
    case "$line" in
    *" ok") echo "ok" ;;
    *FAILED*) echo "**FAILED**" ;;
    *) echo "**not run**" ;;
    esac
}

echo "## Faults"
echo
echo "\`cargo test --test it\` (debug build): the fault tests in \`tests/it/faults.rs\`"
echo "and the related tests in other modules, against the real daemon."
echo
echo "| test | injected | lost | result |"
echo "|---|---|---|---|"
failed=0
for name in $(grep -E '^test faults::' "$log" | awk '{print $2}' | sort -u); do
    row=$(grep -E "^RELIABILITY\|$name\|" "$log" | tail -n 1)
    injected=$(echo "$row" | cut -d'|' -f3)
    lost=$(echo "$row" | cut -d'|' -f4)
    res=$(result "$name")
    [ "$res" = ok ] || { failed=$((failed + 1)); lost="see the test's output"; }
    echo "| \`$name\` | ${injected:-?} | ${lost:-?} | $res |"
done
for row in "${related[@]}"; do
    IFS='|' read -r name injected lost <<<"$row"
    res=$(result "$name")
    [ "$res" = ok ] || { failed=$((failed + 1)); lost="see the test's output"; }
    echo "| \`$name\` | $injected | $lost | $res |"
done
summary=$(grep -E '^test result' "$log" | tail -n 1)
echo
echo "${summary:-no test result (build failed?)}"
if [ "$code" != 0 ] || [ "$failed" != 0 ]; then
    say "$failed test(s) failed or did not run (cargo exit $code)"
    exit 1
fi
