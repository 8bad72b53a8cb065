#!/usr/bin/env bash
# Supply-chain checks of the workspace (deny.toml): advisories, licences, bans and sources, with
# `cargo deny --offline`. The advisories come from a RustSec advisory-db snapshot, since no
# machine here reaches its git host: ADVISORY_DB_SNAPSHOT, else ../shared/advisory-db beside this
# checkout, else /work/shared/advisory-db (where these machines mount it). It is laid out once as the git checkout cargo-deny expects (deny.toml's db-path),
# and its date is printed, so that nobody mistakes an old snapshot for today's database.
# cargo-deny is built once into ~/.cargo/bin when missing (a few minutes); later runs skip it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qF "$version"; then
  echo "deny: installing cargo-deny $version (once)"
  cargo install --locked --quiet "cargo-deny@$version"
fi

snapshot=${ADVISORY_DB_SNAPSHOT:-}
for candidate in "$PWD/../shared/advisory-db" /work/shared/advisory-db; do
  [ -n "$snapshot" ] || [ ! -f "$candidate/SNAPSHOT" ] || snapshot=$candidate
done
[ -n "$snapshot" ] && [ -f "$snapshot/SNAPSHOT" ] || {
  echo "deny: no advisory-db snapshot (ADVISORY_DB_SNAPSHOT, ../shared/advisory-db, /work/shared/advisory-db). Fix: set ADVISORY_DB_SNAPSHOT to a copy of github.com/rustsec/advisory-db with a SNAPSHOT file ('COMMIT YYYY-MM-DD')" >&2
  exit 1
}
read -r commit date <"$snapshot/SNAPSHOT"
dest="$HOME/.cache/advisory-dbs/advisory-db-3157b0e258782691" # cargo-deny's folder for the RustSec URL
if [ ! -f "$dest/.snapshot-$commit" ]; then
  rm -rf "$dest" && mkdir -p "$dest" && cp -r "$snapshot/." "$dest/" && chmod -R u+w "$dest"
  git -C "$dest" init -q -b main && git -C "$dest" add -A
  GIT_AUTHOR_DATE="${date}T00:00:00Z" GIT_COMMITTER_DATE="${date}T00:00:00Z" \
    git -C "$dest" -c user.name=snapshot -c user.email=snapshot@localhost commit -qm "advisory-db snapshot $commit"
  touch "$dest/.snapshot-$commit"
fi
age_days=$(( ($(date +%s) - $(date -d "$date" +%s)) / 86400 ))
# cargo deny reads the metadata of every package in Cargo.lock, including those of other targets
# (wasm-bindgen, windows-*), which a fresh machine's build never downloads: fetch them all first.
cargo fetch --locked --quiet
echo "deny: advisories from the advisory-db SNAPSHOT of $date (commit ${commit:0:12}, $age_days days old), not fetched"
cargo deny --offline check
