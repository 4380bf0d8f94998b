# Flattens the block-style YAML subset that the Neptune Manager renders for
# cloud-init NoCloud seeds into one "path<TAB>value" line per scalar, e.g.
#   ethernets.eth0.addresses.0	10.0.0.2/30
#   write_files.0.content	table ip neptune_nat {\n  chain ...
# Values are escaped (\ -> \\, newline -> \n) so that the shell can restore
# them exactly with printf '%b' and a line stays a record.
# Supported: nested mappings, "- " sequences (indented under their key or at
# the key's own column, as PyYAML writes them), plain, 'single' and "double"
# quoted scalars, | and |- block scalars, [] and {} as empty, # comments.
# Not supported (ignored or read as plain text): flow collections with
# content, anchors/aliases, multi-document streams, > folding.

function esc(s) { gsub(/\\/, "\\\\", s); gsub(/\n/, "\\n", s); return s }

function emit(path, val) { printf "%s\t%s\n", path, esc(val) }

function unquote(s,    q, out, i, c, n) {
	sub(/^[ \t]+/, "", s)
	q = substr(s, 1, 1)
	if (q == "\"") {
		out = ""
		n = length(s)
		for (i = 2; i <= n; i++) {
			c = substr(s, i, 1)
			if (c == "\\" && i < n) {
				i++
				c = substr(s, i, 1)
				if (c == "n") c = "\n"
				else if (c == "t") c = "\t"
				else if (c == "r") c = "\r"
				else if (c == "0") c = ""
				# \" \\ \/ and anything else stand for themselves
			} else if (c == "\"") {
				break
			}
			out = out c
		}
		return out
	}
	if (q == "'") {
		s = substr(s, 2)
		out = ""
		while ((i = index(s, "'")) > 0) {
			if (substr(s, i + 1, 1) == "'") { out = out substr(s, 1, i); s = substr(s, i + 2); continue }
			return out substr(s, 1, i - 1)
		}
		return out s
	}
	sub(/[ \t]+#.*$/, "", s)
	sub(/[ \t]+$/, "", s)
	if (s == "~" || s == "null") return ""
	return s
}

function indent_of(s) { match(s, /^ */); return RLENGTH }

# A mapping entry is "key:" or "key: value" with a key that is not quoted
# text of a scalar; quoted keys are accepted too.
function is_entry(t) {
	return t ~ /^[A-Za-z0-9_.\/-]+:([ \t]|$)/ || t ~ /^"[^"]*":([ \t]|$)/ || t ~ /^'[^']*':([ \t]|$)/
}

function push(ind, pfx, seq) { depth++; FI[depth] = ind; FP[depth] = pfx; FS_[depth] = seq; FC[depth] = -1 }

# Block scalar: lines more indented than the key (and blank lines) belong to it.
function block_scalar(path, keyind, style,    buf, bi, line, li, nblank) {
	buf = ""; bi = -1; nblank = 0
	while ((getline line) > 0) {
		sub(/\r$/, "", line)
		if (line ~ /^[ \t]*$/) { nblank++; continue }
		li = indent_of(line)
		if (li <= keyind) { held = line; break }
		if (bi < 0) bi = li
		while (nblank > 0) { buf = buf "\n"; nblank-- }
		buf = buf substr(line, bi + 1) "\n"
	}
	if (style == "|-") sub(/\n+$/, "", buf)
	else if (buf != "") { sub(/\n+$/, "", buf); buf = buf "\n" }
	emit(path, buf)
}

function entry(t, ind, pfx,    k, v, p) {
	p = index(t, ":")
	if (substr(t, 1, 1) == "\"" || substr(t, 1, 1) == "'") {
		p = index(substr(t, 2), substr(t, 1, 1)) + 2
		k = substr(t, 2, p - 3)
	} else {
		k = substr(t, 1, p - 1)
	}
	v = substr(t, p + 1)
	sub(/^[ \t]+/, "", v)
	if (v ~ /^#/) v = ""
	if (v == "") { pending = pfx k; pending_ind = ind; return }
	if (v ~ /^\|-?[ \t]*$/ || v ~ /^\|-?[ \t]+#/) { sub(/[ \t].*$/, "", v); block_scalar(pfx k, ind, v); return }
	if (v ~ /^\[[ \t]*\]/ || v ~ /^\{[ \t]*\}/) { emit(pfx k, ""); return }
	emit(pfx k, unquote(v))
}

function handle(line,    ind, t, it, rest, rind) {
	ind = indent_of(line)
	t = substr(line, ind + 1)
	sub(/[ \t]+$/, "", t)
	if (pending != "") {
		if (ind > pending_ind || (ind == pending_ind && t ~ /^-( |$)/))
			push(ind, pending ".", t ~ /^-( |$)/)
		else
			emit(pending, "")
		pending = ""
	}
	while (depth > 1 && (FI[depth] > ind || (FI[depth] == ind && FS_[depth] && t !~ /^-( |$)/)))
		depth--
	if (t ~ /^-( |$)/) {
		if (!FS_[depth]) return   # a list item where none can be: ignore
		FC[depth]++
		it = FP[depth] FC[depth]
		rest = substr(t, 2)
		rind = ind + 1 + indent_of(rest)
		sub(/^ +/, "", rest)
		if (rest == "") { pending = it; pending_ind = ind; return }
		if (is_entry(rest)) { push(rind, it ".", 0); entry(rest, rind, it "."); return }
		if (rest ~ /^\[[ \t]*\]/ || rest ~ /^\{[ \t]*\}/) { emit(it, ""); return }
		emit(it, unquote(rest))
		return
	}
	if (is_entry(t)) entry(t, ind, FP[depth])
}

BEGIN { depth = 0; push(0, "", 0); pending = ""; held = "" }

{
	line = $0
	do {
		sub(/\r$/, "", line)
		if (line ~ /^[ \t]*(#|$)/ || line ~ /^(---|\.\.\.)[ \t]*$/) break
		held = ""
		handle(line)
		line = held
	} while (line != "")
}

END { if (pending != "") emit(pending, "") }
