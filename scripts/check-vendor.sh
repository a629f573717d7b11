#!/usr/bin/env bash
# Each crate in vendor/ is the source published on crates.io plus the patches in
# vendor/patches/<crate>/, applied in order. This script proves it, and rebuilds from it.
#
#   check-vendor.sh [CRATE...]        check: the published source (sha256-verified) with the
#                                     patches applied is exactly vendor/<crate>; fails with the
#                                     differing files when a patch no longer applies or the tree
#                                     drifted (default: every crate with a patches directory)
#   check-vendor.sh --write [CRATE...]
#                                     rewrite vendor/<crate> from the published source plus the
#                                     patches (only the files that differ are touched)
#   check-vendor.sh --series CRATE DIR [VERSION SHA256]
#                                     a git repository in DIR to edit or re-base the patches:
#                                     tag `upstream` is the published source, branch `tether` has
#                                     one commit per patch on top; with VERSION and SHA256 (the
#                                     crates.io index's cksum) the patches are then rebased onto
#                                     that release (fix conflicts, `git rebase --continue`)
#   check-vendor.sh --save CRATE DIR  write DIR's commits back as vendor/patches/<crate>/*.patch
#                                     (and the new version into its `upstream` file), then
#                                     --write and check CRATE
#
# vendor/patches/<crate>/upstream names the release (`version`, `sha256`: the registry's
# checksum of the .crate), what of it is left out of vendor/<crate> (`leave_out`) and which
# files there are Tether's own, neither published nor patched (`own`: not compared, kept by
# --write). The .crate comes from cargo's registry cache or target/vendor-crates/ if a verified
# copy is there, else from https://static.crates.io (then kept in target/vendor-crates/).
# A patch is a commit message (what it does, why, and a "To drop it:" paragraph saying what
# upstream would need to change), a `---` line, and a `git diff`. Needs bash, git, tar, curl,
# sha256sum, diff. Nothing else is left behind: work happens in a temporary directory.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENDOR="$REPO_ROOT/vendor"
PATCHES="$VENDOR/patches"
CRATE_CACHE="$REPO_ROOT/target/vendor-crates"
REGISTRY="https://static.crates.io/crates"

# Git here works on throwaway repositories only: no user or system config (hooks, diff
# options, identity), fixed identity and dates so that a patch written twice is the same bytes.
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0
export GIT_AUTHOR_NAME=Tether GIT_AUTHOR_EMAIL=tether@invalid
export GIT_COMMITTER_NAME=Tether GIT_COMMITTER_EMAIL=tether@invalid
export GIT_AUTHOR_DATE="2000-01-01T00:00:00Z" GIT_COMMITTER_DATE="2000-01-01T00:00:00Z"

say() { printf '\033[1;34m[vendor]\033[0m %s\n' "$*"; }
fail() {
  printf '\033[1;31m[vendor] %s\033[0m\n' "$*" >&2
  exit 1
}

TMP="$(mktemp -d "${TMPDIR:-/tmp}/check-vendor.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# --- the `upstream` file -------------------------------------------------------------------

# Reads vendor/patches/$1/upstream into VERSION, SHA256, LEAVE_OUT (array), OWN (array).
read_upstream() {
  local crate="$1" file="$PATCHES/$1/upstream" key value
  [ -f "$file" ] || fail "$crate: no $file"
  VERSION="" SHA256="" LEAVE_OUT=() OWN=()
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line%%#*}"
    [[ "$line" =~ ^[[:space:]]*$ ]] && continue
    [[ "$line" =~ ^[[:space:]]*([a-z_0-9]+)[[:space:]]*=[[:space:]]*(.*[^[:space:]])?[[:space:]]*$ ]] \
      || fail "$file: cannot read line: $line"
    key="${BASH_REMATCH[1]}" value="${BASH_REMATCH[2]}"
    case "$key" in
      version) VERSION="$value" ;;
      sha256) SHA256="$value" ;;
      leave_out) read -r -a LEAVE_OUT <<<"$value" ;;
      own) read -r -a OWN <<<"$value" ;;
      *) fail "$file: unknown key $key" ;;
    esac
  done <"$file"
  [[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$ ]] || fail "$file: bad version '$VERSION'"
  [[ "$SHA256" =~ ^[0-9a-f]{64}$ ]] || fail "$file: bad sha256 '$SHA256'"
}

# --- the published source ------------------------------------------------------------------

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# Prints the path of a verified $1-$2.crate (sha256 $3), downloading it if needed.
crate_file() {
  local name="$1" version="$2" sha="$3" file="$1-$2.crate" f
  for f in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$file" "$CRATE_CACHE/$file"; do
    if [ -f "$f" ] && [ "$(sha_of "$f")" = "$sha" ]; then
      echo "$f"
      return 0
    fi
  done
  say "downloading $REGISTRY/$name/$file" >&2
  mkdir -p "$CRATE_CACHE"
  curl -sSfL --retry 3 --connect-timeout 20 --max-time 300 -o "$TMP/$file" "$REGISTRY/$name/$file" \
    || fail "$name $version: cannot download $REGISTRY/$name/$file"
  local got
  got="$(sha_of "$TMP/$file")"
  [ "$got" = "$sha" ] || fail "$name $version: the download's sha256 is $got, not $sha (vendor/patches/$name/upstream)"
  mv "$TMP/$file" "$CRATE_CACHE/$file"
  echo "$CRATE_CACHE/$file"
}

# Extracts the published source of $1 (version $2, sha256 $3) into $4, without what the
# crate's `upstream` file leaves out or marks as Tether's own (LEAVE_OUT, OWN must be read).
extract_published() {
  local name="$1" version="$2" sha="$3" dest="$4" crate p
  crate="$(crate_file "$name" "$version" "$sha")"
  mkdir -p "$dest"
  tar -xzf "$crate" -C "$dest" --strip-components=1 "$name-$version" \
    || fail "$name $version: cannot extract $crate"
  for p in ${LEAVE_OUT[@]+"${LEAVE_OUT[@]}"} ${OWN[@]+"${OWN[@]}"}; do
    case "$p" in /* | *..*) fail "$name: leave_out/own must be relative paths inside the crate: $p" ;; esac
    rm -rf "${dest:?}/$p"
  done
}

# --- patches -------------------------------------------------------------------------------

patch_files() { find "$PATCHES/$1" -maxdepth 1 -name '*.patch' | LC_ALL=C sort; }

# The commit message at the head of a patch file: everything before the first line `---`.
patch_message() { sed -n '/^---$/q;p' "$1"; }

check_patch_header() {
  local patch="$1" msg
  msg="$(patch_message "$patch")"
  [ -n "$(head -n1 <<<"$msg")" ] || fail "${patch#"$REPO_ROOT"/}: no subject line before '---'"
  grep -q '^To drop it:' <<<"$msg" \
    || fail "${patch#"$REPO_ROOT"/}: the header has no 'To drop it:' paragraph (what upstream would need to change)"
  grep -q '^diff --git ' "$patch" || fail "${patch#"$REPO_ROOT"/}: no diff in it"
}

# Applies $2 (a patch file) in the git work tree $1; on failure says which hunks and stops.
apply_patch() {
  local dir="$1" patch="$2" out
  if ! out="$(git -C "$dir" apply --whitespace=nowarn --verbose "$patch" 2>&1)"; then
    printf '%s\n' "$out" | grep -v '^Checking patch\|^Applied patch' >&2 || true
    fail "${patch#"$REPO_ROOT"/} does not apply to the published source plus the patches before it (see above; fix it with --series)"
  fi
}

# Builds the published source of $1 plus its patches in $2 (a fresh git work tree); with
# `commit` as $3, one commit for the source (tag `upstream`) and one per patch.
build_tree() {
  local crate="$1" dir="$2" commit="${3:-}" patch
  read_upstream "$crate"
  extract_published "$crate" "$VERSION" "$SHA256" "$dir"
  git init -q --initial-branch=tether "$dir"
  if [ -n "$commit" ]; then
    git -C "$dir" add -A
    git -C "$dir" commit -q -m "$crate $VERSION as published on crates.io" -m "sha256 $SHA256"
    git -C "$dir" tag upstream
    git -C "$dir" config tether.crate "$crate"
    git -C "$dir" config tether.version "$VERSION"
    git -C "$dir" config tether.sha256 "$SHA256"
    git -C "$dir" config user.name Tether # for commits made there, whoever makes them
    git -C "$dir" config user.email tether@invalid
  fi
  while IFS= read -r patch; do
    [ -n "$patch" ] || continue
    check_patch_header "$patch"
    apply_patch "$dir" "$patch"
    if [ -n "$commit" ]; then
      git -C "$dir" add -A
      { patch_message "$patch"; printf '\nPatch-file: %s\n' "$(basename "$patch")"; } \
        | git -C "$dir" commit -q --cleanup=verbatim -F -
    fi
  done < <(patch_files "$crate")
}

# --- comparing and writing -----------------------------------------------------------------

# Prints the relative paths of the files in $1, without .git, target and OWN.
tree_files() {
  local dir="$1" f skip o
  (cd "$dir" && find . \( -name .git -o -name target \) -prune -o \( -type f -o -type l \) -print) \
    | sed 's|^\./||' | LC_ALL=C sort | while IFS= read -r f; do
    skip=""
    for o in ${OWN[@]+"${OWN[@]}"}; do
      [ "$f" = "$o" ] || [[ "$f" == "$o"/* ]] && skip=1
    done
    [ -n "$skip" ] || printf '%s\n' "$f"
  done
}

check_crate() {
  local crate="$1" built target="$VENDOR/$1" f bad=()
  [ -d "$target" ] || fail "$crate: no vendor/$crate"
  built="$(mktemp -d "$TMP/build.XXXXXX")/$crate"
  build_tree "$crate" "$built"
  while IFS= read -r f; do
    if [ ! -e "$built/$f" ]; then bad+=("only in vendor/$crate: $f")
    elif [ ! -e "$target/$f" ]; then bad+=("missing from vendor/$crate: $f")
    elif ! cmp -s "$built/$f" "$target/$f"; then bad+=("differs: vendor/$crate/$f")
    fi
  done < <({ tree_files "$built"; tree_files "$target"; } | LC_ALL=C sort -u)
  if [ ${#bad[@]} -gt 0 ]; then
    printf '\033[1;31m[vendor] vendor/%s is not %s %s plus vendor/patches/%s:\033[0m\n' \
      "$crate" "$crate" "$VERSION" "$crate" >&2
    printf '  %s\n' "${bad[@]}" >&2
    printf '\nThe differences (- published source plus patches, + vendor/%s):\n' "$crate" >&2
    local skip=(-x .git -x target) o
    for o in ${OWN[@]+"${OWN[@]}"}; do skip+=(-x "$(basename "$o")"); done
    (cd "$(dirname "$built")" && diff -ruN "${skip[@]}" "$crate" "$target" | head -n 200) >&2 || true
    fail "vendor/$crate drifted from its patches: put the change in a patch (--series, --save) or undo it (--write)"
  fi
  say "$crate $VERSION + $(patch_files "$crate" | wc -l) patches = vendor/$crate"
}

write_crate() {
  local crate="$1" built target="$VENDOR/$1" f changed=0
  built="$(mktemp -d "$TMP/build.XXXXXX")/$crate"
  build_tree "$crate" "$built"
  mkdir -p "$target"
  while IFS= read -r f; do
    if [ ! -e "$built/$f" ]; then
      rm -f "$target/$f"
      changed=$((changed + 1))
    elif [ ! -e "$target/$f" ] || ! cmp -s "$built/$f" "$target/$f"; then
      mkdir -p "$(dirname "$target/$f")"
      cp "$built/$f" "$target/$f"
      changed=$((changed + 1))
    fi
  done < <({ tree_files "$built"; tree_files "$target"; } | LC_ALL=C sort -u)
  find "$target" -mindepth 1 -type d -empty -not -path '*/target*' -delete
  say "vendor/$crate written from $crate $VERSION + patches ($changed files changed)"
}

# --- series: editing and re-basing the patches ---------------------------------------------

series() {
  local crate="$1" dir="$2" new_version="${3:-}" new_sha="${4:-}" o
  [ ! -e "$dir" ] || [ -z "$(ls -A "$dir")" ] || fail "$dir exists and is not empty"
  build_tree "$crate" "$dir" commit
  printf 'target\n' >>"$dir/.git/info/exclude"
  for o in ${OWN[@]+"${OWN[@]}"}; do
    # Tether's own files (a Cargo.lock to build with): beside the work tree, never committed.
    printf '/%s\n' "$o" >>"$dir/.git/info/exclude"
    if [ -e "$VENDOR/$crate/$o" ]; then cp -R "$VENDOR/$crate/$o" "$dir/$o"; fi
  done
  say "$dir: tag upstream = $crate $VERSION, branch tether = $(patch_files "$crate" | wc -l) patches"
  [ -n "$new_version" ] || return 0
  [[ "$new_sha" =~ ^[0-9a-f]{64}$ ]] || fail "--series $crate $dir $new_version needs the release's sha256 (the index's cksum)"
  local old_version="$VERSION" new="$TMP/new"
  read_upstream "$crate"
  extract_published "$crate" "$new_version" "$new_sha" "$new"
  git -C "$dir" checkout -q --detach upstream
  git -C "$dir" rm -q -r .
  cp -R "$new/." "$dir/"
  git -C "$dir" add -A
  git -C "$dir" commit -q -m "$crate $new_version as published on crates.io" -m "sha256 $new_sha"
  git -C "$dir" tag new-upstream
  git -C "$dir" config tether.version "$new_version"
  git -C "$dir" config tether.sha256 "$new_sha"
  git -C "$dir" checkout -q tether
  if git -C "$dir" rebase -q --onto new-upstream upstream tether; then
    say "$dir: the patches rebased onto $crate $new_version cleanly"
  else
    say "$dir: rebasing the patches from $old_version onto $new_version stopped at a conflict;"
    say "fix it there, then 'git rebase --continue' until done"
  fi
  say "then: scripts/check-vendor.sh --save $crate $dir"
}

save() {
  local crate="$1" dir="$2" base version sha names=() c name n file msg o
  [ -d "$dir/.git" ] || fail "$dir is not a repository made by --series"
  [ "$(git -C "$dir" config tether.crate)" = "$crate" ] || fail "$dir was made for another crate"
  if [ -d "$dir/.git/rebase-merge" ] || [ -d "$dir/.git/rebase-apply" ]; then
    fail "$dir: finish the rebase first"
  fi
  [ -z "$(git -C "$dir" status --porcelain)" ] || fail "$dir has uncommitted changes: commit them (a new commit is a new patch; 'git commit --fixup' and 'git rebase -i --autosquash upstream' fold one in)"
  read_upstream "$crate"
  base=upstream
  git -C "$dir" rev-parse -q --verify new-upstream >/dev/null && base="new-upstream"
  version="$(git -C "$dir" config tether.version)"
  sha="$(git -C "$dir" config tether.sha256)"
  n=0
  for c in $(git -C "$dir" rev-list --reverse "$base..tether"); do
    name="$(git -C "$dir" log -1 --format='%(trailers:key=Patch-file,valueonly)' "$c" | head -n1)"
    [ -n "$name" ] || name="$(printf '%04d-%s.patch' "$n" "$(git -C "$dir" log -1 --format=%f "$c" | cut -c1-60)")"
    names+=("$name")
    msg="$(git -C "$dir" log -1 --format=%B "$c" | grep -v '^Patch-file: ')"
    {
      printf '%s\n---\n' "$msg"
      git -C "$dir" diff --no-color --no-ext-diff --no-renames --stat=100 "$c^" "$c"
      printf '\n'
      git -C "$dir" -c core.abbrev=12 diff --no-color --no-ext-diff --no-renames \
        --src-prefix=a/ --dst-prefix=b/ --diff-algorithm=myers "$c^" "$c"
    } >"$TMP/$name"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || fail "$dir: no commits on tether after $base"
  find "$PATCHES/$crate" -maxdepth 1 -name '*.patch' -delete
  for name in "${names[@]}"; do mv "$TMP/$name" "$PATCHES/$crate/$name"; done
  file="$PATCHES/$crate/upstream"
  sed -i -e "s/^version *=.*/version = $version/" -e "s/^sha256 *=.*/sha256 = $sha/" "$file"
  say "vendor/patches/$crate: $n patches for $crate $version"
  for o in ${OWN[@]+"${OWN[@]}"}; do
    # Tether's own files, if changed there (a Cargo.lock updated for the new release).
    if [ -f "$dir/$o" ] && ! cmp -s "$dir/$o" "$VENDOR/$crate/$o"; then
      cp "$dir/$o" "$VENDOR/$crate/$o"
      say "vendor/$crate/$o: taken from $dir"
    fi
  done
  write_crate "$crate"
  check_crate "$crate"
}

# --- main ----------------------------------------------------------------------------------

all_crates() { find "$PATCHES" -mindepth 2 -maxdepth 2 -name upstream | sed 's|/upstream$||;s|.*/||' | LC_ALL=C sort; }

mode=check
case "${1:-}" in
  --write) mode="write"; shift ;;
  --series) mode="series"; shift ;;
  --save) mode="save"; shift ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d;s/^# \{0,1\}//'; exit 0 ;;
  -*) fail "unknown option $1 (see --help)" ;;
esac
for tool in git tar curl sha256sum diff cmp; do
  command -v "$tool" >/dev/null || fail "needs $tool"
done

case "$mode" in
  series)
    [ $# -eq 2 ] || [ $# -eq 4 ] || fail "usage: --series CRATE DIR [VERSION SHA256]"
    series "$1" "$(realpath -m "$2")" "${3:-}" "${4:-}" ;;
  save)
    [ $# -eq 2 ] || fail "usage: --save CRATE DIR"
    save "$1" "$(realpath -m "$2")" ;;
  *)
    crates=("$@")
    [ ${#crates[@]} -gt 0 ] || mapfile -t crates < <(all_crates)
    [ ${#crates[@]} -gt 0 ] || fail "no vendor/patches/*/upstream"
    if [ "$mode" = check ] && [ ${#crates[@]} -gt 1 ]; then
      # Each crate in a process of its own, so that one failing does not hide the others.
      failed=()
      for crate in "${crates[@]}"; do "$BASH" "$0" "$crate" || failed+=("$crate"); done
      [ ${#failed[@]} -eq 0 ] || fail "not their published source plus patches: ${failed[*]}"
    else
      for crate in "${crates[@]}"; do "${mode}_crate" "$crate"; done
    fi ;;
esac
