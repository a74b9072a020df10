/* The built-in detectors' dense passes in C: e-mail addresses, IBANs, IPv4 addresses and the numbers
 * pass (cards, SSNs, phone numbers), plus the substring hints that decide which secret patterns run.
 *
 * Why C: every pass in Python's `re` costs 2 to 40 ms per MiB before a single finding, and text dense
 * with real values (45,000 phone numbers or 75,000 addresses per MiB) pays 1 to 8 us of Python for each
 * one. Issue 19 asks for at most 20 ms per MiB on such text; one pass in C reads a MiB in about a
 * millisecond.
 *
 * What it must match: routing/policies/detectors.py, byte for byte. Each function below says which
 * pattern or Python function it stands for and reads it the way CPython's matcher does (greedy and
 * possessive repeats, backtracking into alternatives, look-arounds that see past the search's bounds).
 * tests/routing/test_native_scan.py checks the two agree on the corpus and on generated text. The rare,
 * costly verdicts (phonenumbers' international and trunk-zero plans, python-stdnum's IBAN formats) call
 * back into the Python functions that give them; the North American plan is a table built from
 * phonenumbers' own patterns (detectors.nanp_table).
 *
 * The passes read 1-byte text (ASCII and Latin-1): in it \d is [0-9] and case-insensitive words compare
 * as ASCII, as CPython's matcher does. A wider string is read through a 1-byte stand-in (read_text): each
 * character above U+00FF becomes one that the patterns treat alike (a letter, a space or neither), so
 * offsets and findings are the same; a string with what the stand-in cannot stand for (a decimal digit of
 * another script, which \d matches, or one of the four characters that case-fold to an ASCII letter)
 * takes the Python path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef Py_ssize_t ssize;

enum { F_EMAIL = 1, F_IBAN = 2, F_IP = 4, F_SSN = 8, F_CARD = 16, F_PHONE = 32 };
enum {
    H_PKEY = 1, H_JWT = 2, H_PROVKEY = 4, H_BEARER = 8, H_KEY = 16, H_SECRET = 32, H_TOKEN = 64,
    H_PASSW = 128, H_PWD = 256, H_V6 = 512, H_AT = 1024, H_DOT = 2048
};

static PyObject *cb_iban_registered, *cb_valid_number, *cb_trunk_valid, *cb_nanp_valid;
static PyObject *nanp_table; /* bytes: 1001 uint32 offsets by area code, then 7 uint16 masks a row */
static PyObject *s_email, *s_iban, *s_ip, *s_ssn, *s_card, *s_phone;
static unsigned char is_word[256], is_space[256];
/* The two-character openings of what `hints` looks for (bit 1) and of the provider-key hints (bit 2): a lookup
 * per position skips the rest, without the mispredicted branches a switch on every character costs on
 * random text (3 ns a character on base64, 1 ns with this). */
static unsigned char openings[65536];
#define OPENING(s, i) openings[(s)[i] | ((unsigned)(s)[(i) + 1] << 8)]

typedef struct {
    const Py_UCS1 *s;
    ssize n;
    int flags;
    PyObject *found;
} Ctx;

#define DIGIT(c) ((c) >= '0' && (c) <= '9')
#define UPPER(c) ((c) >= 'A' && (c) <= 'Z')
#define ALPHA(c) (UPPER(c) || ((c) >= 'a' && (c) <= 'z'))
#define ALNUM(c) (ALPHA(c) || DIGIT(c))
#define LOWER(c) (UPPER(c) ? (c) + 32 : (c))

static inline int at(const Ctx *x, ssize i) { return (i >= 0 && i < x->n) ? x->s[i] : -1; }
static inline int digit_at(const Ctx *x, ssize i) { return i >= 0 && i < x->n && DIGIT(x->s[i]); }
static inline int word_at(const Ctx *x, ssize i) { return i >= 0 && i < x->n && is_word[x->s[i]]; }
static inline ssize run_digits(const Ctx *x, ssize i) {
    ssize j = i;
    while (j < x->n && DIGIT(x->s[j])) j++;
    return j - i;
}

static PyObject *finding(ssize start, ssize end, PyObject *name) {
    PyObject *t = PyTuple_New(3);
    if (t == NULL) return NULL;
    PyObject *a = PyLong_FromSsize_t(start), *b = PyLong_FromSsize_t(end);
    if (a == NULL || b == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        Py_DECREF(t);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, a);
    PyTuple_SET_ITEM(t, 1, b);
    PyTuple_SET_ITEM(t, 2, Py_NewRef(name));
    /* Two ints and a str can hold no cycle: keep the collector from walking tens of thousands of them. */
    PyObject_GC_UnTrack(t);
    return t;
}

static int add(Ctx *x, ssize start, ssize end, PyObject *name) {
    PyObject *t = finding(start, end, name);
    if (t == NULL) return -1;
    int r = PyList_Append(x->found, t);
    Py_DECREF(t);
    return r;
}

/* Calls a Python verdict on a slice (or a given string): 1, 0, or -1 on an exception. */
static int call_bool(PyObject *fn, PyObject *arg) {
    if (arg == NULL) return -1;
    PyObject *r = PyObject_CallOneArg(fn, arg);
    Py_DECREF(arg);
    if (r == NULL) return -1;
    int v = PyObject_IsTrue(r);
    Py_DECREF(r);
    return v;
}
static PyObject *slice(const Ctx *x, ssize a, ssize b) {
    return PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, x->s + a, b - a);
}

/* ---- substring hints ----------------------------------------------------------------------------- */

static inline int eq_n(const Ctx *x, ssize i, const char *lit, ssize k) {
    return i + k <= x->n && memcmp(x->s + i, lit, (size_t)k) == 0;
}
static inline int ieq_n(const Ctx *x, ssize i, const char *lit, ssize k) { /* lit is lower-case ASCII */
    if (i + k > x->n) return 0;
    for (ssize j = 0; j < k; j++)
        if (LOWER(x->s[i + j]) != (unsigned char)lit[j]) return 0;
    return 1;
}
/* literals only: their length is known where they are written */
#define eq_at(x, i, lit) eq_n(x, i, lit, (ssize)sizeof(lit) - 1)
#define ieq_at(x, i, lit) ieq_n(x, i, lit, (ssize)sizeof(lit) - 1)
static int hex_or_colon(int c) {
    return c == ':' || DIGIT(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* _PROVKEY_HINTS at i: how far before i the key it hints at starts ("github_pat_" six characters before
 * "_pat_", "sk_live_" one before "k_live_", the others at i), or -1 when none is there. */
static ssize provkey_hint(const Ctx *x, ssize i) {
    switch (x->s[i]) {
    case 's':
        return eq_at(x, i, "sk-") ? 0 : -1;
    case 'g':
        return eq_at(x, i, "ghp_") || eq_at(x, i, "gho_") || eq_at(x, i, "ghu_") || eq_at(x, i, "ghs_") ||
                       eq_at(x, i, "ghr_")
                   ? 0
                   : -1;
    case '_':
        return eq_at(x, i, "_pat_") ? 6 : -1;
    case 'k':
        return eq_at(x, i, "k_live_") || eq_at(x, i, "k_test_") ? 1 : -1;
    case 'x':
        return eq_at(x, i, "xox") ? 0 : -1;
    case 'A':
        return eq_at(x, i, "AIza") || eq_at(x, i, "AKIA") || eq_at(x, i, "ASIA") || eq_at(x, i, "ABIA") ||
                       eq_at(x, i, "ACCA")
                   ? 0
                   : -1;
    }
    return -1;
}

/* The substring checks of Scanner._secrets and scan (detectors.secret_hints), in one pass. */
static long hints_of(const Ctx *x) {
    long h = 0;
    const Py_UCS1 *s = x->s;
    if (memchr(s, '@', (size_t)x->n)) h |= H_AT;
    if (memchr(s, '.', (size_t)x->n)) h |= H_DOT;
    for (ssize i = 0; i + 1 < x->n; i++) {
        unsigned opening = OPENING(s, i);
        if (!opening) continue;
        if ((opening & 2) && provkey_hint(x, i) >= 0) h |= H_PROVKEY;
        if (!(opening & 1)) continue;
        switch (s[i]) {
        case '-':
            if (!(h & H_PKEY) && eq_at(x, i, "-----BEGIN")) h |= H_PKEY;
            break;
        case ':':
            if (i + 1 < x->n && hex_or_colon(s[i + 1])) h |= H_V6;
            break;
        case 'e':
            if (eq_at(x, i, "eyJ")) h |= H_JWT;
            /* fall through */
        case 'E':
            if (ieq_at(x, i, "earer")) h |= H_BEARER;
            break;
        case 's':
        case 'S':
            if (ieq_at(x, i, "secret")) h |= H_SECRET;
            break;
        case 'k':
        case 'K':
            if (ieq_at(x, i, "key")) h |= H_KEY;
            break;
        case 't':
        case 'T':
            if (ieq_at(x, i, "token")) h |= H_TOKEN;
            break;
        case 'p':
        case 'P':
            if (ieq_at(x, i, "passw")) h |= H_PASSW;
            else if (ieq_at(x, i, "pwd")) h |= H_PWD;
            break;
        }
    }
    return h;
}

/* ---- e-mail addresses (_EMAIL and Scanner._emails) -------------------------------------------------- */

static inline int local_char(int c) {
    return ALNUM(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

/* Where the domain after an "@" at p-1 ends, or -1. Labels are whole runs of [A-Za-z0-9-] ending in a
 * ".", 1 to 63 long, starting and ending alphanumeric. The regex takes as many as there are (the greedy
 * "+") and backs off one at a time until a top-level domain follows: 2 to 24 letters not followed by
 * [\w-]. That is the last label end, in text order, where one follows. */
static ssize email_domain(const Ctx *x, ssize p) {
    ssize best = -1, q = p;
    for (;;) {
        if (!(q < x->n && ALNUM(x->s[q]))) break;
        ssize r = q;
        while (r < x->n && (ALNUM(x->s[r]) || x->s[r] == '-')) r++;
        if (!(r < x->n && x->s[r] == '.' && r - q <= 63 && ALNUM(x->s[r - 1]))) break;
        q = r + 1;
        ssize a = q;
        while (a < x->n && ALPHA(x->s[a])) a++;
        if (a - q >= 2 && a - q <= 24 && !(word_at(x, a) || at(x, a) == '-')) best = a;
    }
    return best;
}

static int emails(Ctx *x) {
    const Py_UCS1 *s = x->s;
    ssize pos = 0;
    while (pos < x->n) {
        const Py_UCS1 *hit = memchr(s + pos, '@', (size_t)(x->n - pos));
        if (hit == NULL) break;
        ssize a = hit - s;
        ssize j = a;
        while (j > 0 && local_char(s[j - 1]) && a - j <= 64) j--;
        /* The local part is the whole run before the "@", 1 to 64 characters, starting at or after pos. */
        if (j == a || a - j > 64 || (j > 0 && local_char(s[j - 1])) || j < pos) {
            pos = a + 1;
            continue;
        }
        ssize end = email_domain(x, a + 1);
        if (end < 0) {
            pos = a + 1;
            continue;
        }
        ssize start = j;
        while (start < a && !ALNUM(s[start])) start++; /* "...jane@x.com": the leading dots are punctuation */
        if (start != a && add(x, start, end, s_email) < 0) return -1;
        pos = end;
    }
    return 0;
}

/* ---- IBANs (_IBAN and is_iban) ------------------------------------------------------------------------ */

static inline int upper_or_digit(int c) { return UPPER(c) || DIGIT(c); }

static int four_ud(const Ctx *x, ssize i) {
    if (i + 4 > x->n) return 0;
    for (int k = 0; k < 4; k++)
        if (!upper_or_digit(x->s[i + k])) return 0;
    return 1;
}

static ssize iban_tail(const Ctx *x, ssize pos) {
    /* (?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9]): the group first (with its space first), longest first. */
    for (int sp = 1; sp >= 0; sp--) {
        ssize b = pos;
        if (sp) {
            if (at(x, pos) != ' ') continue;
            b = pos + 1;
        }
        int m = 0;
        while (m < 3 && b + m < x->n && upper_or_digit(x->s[b + m])) m++;
        for (int k = m; k >= 1; k--) {
            int c = at(x, b + k);
            if (!(c >= 0 && ALNUM(c))) return b + k;
        }
    }
    int c = at(x, pos);
    if (!(c >= 0 && ALNUM(c))) return pos;
    return -1;
}

static ssize iban_groups(const Ctx *x, ssize pos, int count) {
    /* (?: ?[A-Z0-9]{4}){2,7}: one more group first (with its space first), then the tail. */
    if (count < 7) {
        if (at(x, pos) == ' ' && four_ud(x, pos + 1)) {
            ssize r = iban_groups(x, pos + 5, count + 1);
            if (r >= 0) return r;
        }
        if (four_ud(x, pos)) {
            ssize r = iban_groups(x, pos + 4, count + 1);
            if (r >= 0) return r;
        }
    }
    return count >= 2 ? iban_tail(x, pos) : -1;
}

static int ibans(Ctx *x) {
    const Py_UCS1 *s = x->s;
    ssize n = x->n;
    ssize j = 0;
    while (j + 3 < n) {
        while (j + 3 < n && !UPPER(s[j])) j++; /* a tight loop over text with few capitals */
        if (j + 3 >= n) break;
        if (!(DIGIT(s[j + 3]) && DIGIT(s[j + 2]) && UPPER(s[j + 1]) && UPPER(s[j]) && (j == 0 || !ALNUM(s[j - 1])))) {
            j++;
            continue;
        }
        ssize end = iban_groups(x, j + 4, 0);
        if (end < 0) {
            j++;
            continue;
        }
        /* ISO 7064: the number with its first four characters moved to the end, letters as 10..35, mod 97. */
        char compact[64];
        int len = 0;
        for (ssize i = j; i < end && len < 63; i++)
            if (s[i] != ' ') compact[len++] = (char)s[i];
        compact[len] = 0;
        unsigned rem = 0;
        for (int i = 0; i < len; i++) {
            int c = (unsigned char)compact[(i + 4) % len];
            rem = DIGIT(c) ? (rem * 10 + (unsigned)(c - '0')) % 97 : (rem * 100 + (unsigned)(c - 55)) % 97;
        }
        if (rem == 1) {
            int ok = call_bool(cb_iban_registered, PyUnicode_FromStringAndSize(compact, len));
            if (ok < 0) return -1;
            if (ok && add(x, j, end, s_iban) < 0) return -1;
        }
        j = end;
    }
    return 0;
}

/* ---- IPv4 addresses (_IPV4_WORD, _IPV4, _VERSION_BEFORE and Scanner._ipv4) -------------------------------- */

static inline int lb_number(int c) { /* [\w+.\-/@:]: what may not come right before a number */
    return is_word[c] || c == '+' || c == '.' || c == '-' || c == '/' || c == '@' || c == ':';
}

/* _IPV4.fullmatch: four octets 0-255 without leading zeros, separated by dots, nothing else. */
static int ipv4_full(const Ctx *x, ssize a, ssize b) {
    ssize i = a;
    for (int o = 0; o < 4; o++) {
        if (o) {
            if (i >= b || x->s[i] != '.') return 0;
            i++;
        }
        ssize j = i;
        while (j < b && DIGIT(x->s[j])) j++;
        ssize len = j - i;
        if (len < 1 || len > 3 || (len > 1 && x->s[i] == '0')) return 0;
        int v = 0;
        for (ssize k = i; k < j; k++) v = v * 10 + (x->s[k] - '0');
        if (v > 255) return 0;
        i = j;
    }
    return i == b;
}

/* _VERSION_BEFORE.search(text, max(start - 10, 0), start): (?i)(?:\bv|version\s*|release\s*)$ */
static int version_before(const Ctx *x, ssize start) {
    ssize lo = start - 10 > 0 ? start - 10 : 0;
    for (ssize i = lo; i + 7 <= start; i++) {
        if (ieq_at(x, i, "version") || ieq_at(x, i, "release")) {
            ssize k = i + 7;
            while (k < start && is_space[x->s[k]]) k++;
            if (k == start) return 1;
        }
    }
    /* \bv$, where "$" also matches before a newline that ends the searched span */
    for (int nl = 0; nl <= 1; nl++) {
        ssize v = start - 1 - nl;
        if (v < lo) continue;
        if (nl && x->s[start - 1] != '\n') continue;
        if (LOWER(x->s[v]) == 'v' && !word_at(x, v - 1)) return 1;
    }
    return 0;
}

static int ipv4s(Ctx *x) {
    const Py_UCS1 *s = x->s;
    ssize n = x->n, j = 0;
    while (j < n) {
        if (!DIGIT(s[j]) || (j > 0 && lb_number(s[j - 1]))) {
            j++;
            continue;
        }
        ssize q = j + run_digits(x, j);
        int ok = q - j <= 3;
        for (int o = 0; ok && o < 3; o++) {
            ssize m = at(x, q) == '.' ? run_digits(x, q + 1) : 0;
            if (m < 1 || m > 3) ok = 0;
            else q += 1 + m;
        }
        if (ok && (word_at(x, q) || at(x, q) == '-' || (at(x, q) == '.' && digit_at(x, q + 1)))) ok = 0;
        if (!ok) {
            j += run_digits(x, j); /* the run's other digits come after a digit: refused by the look-behind */
            continue;
        }
        if (ipv4_full(x, j, q) && !version_before(x, j) && add(x, j, q, s_ip) < 0) return -1;
        j = q;
    }
    return 0;
}

/* ---- numbers (_NUM, Scanner._numbers, _number, _classify, is_ssn, is_card, is_phone) --------------- */

static inline int num_sep(int c) { /* [ \-.()/] */
    return c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' || c == '/';
}
static inline int date_sep(int c) { return c == '-' || c == '/' || c == '.'; }

/* (?!\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\d.])) at p: 1 when the look-ahead matches (an address). */
static int looks_ipv4(const Ctx *x, ssize p) {
    ssize q = p + run_digits(x, p);
    if (q - p > 2) return 0;
    for (int o = 0; o < 3; o++) {
        if (at(x, q) != '.') return 0;
        ssize m = run_digits(x, q + 1);
        if (m < 1 || m > 3) return 0;
        q += 1 + m;
    }
    return !(digit_at(x, q) || at(x, q) == '.');
}

/* (?!\d{3}[-/.]\d{1,2}[-/.]\d{1,2}(?!\d)|\d?[-/.]\d{1,2}[-/.]\d{2,4}(?!\d)) at p: 1 when it matches. */
static int looks_date(const Ctx *x, ssize p) {
    if (run_digits(x, p) == 3 && date_sep(at(x, p + 3))) {
        ssize q = p + 4, m = run_digits(x, q);
        if ((m == 1 || m == 2) && date_sep(at(x, q + m))) {
            ssize m2 = run_digits(x, q + m + 1);
            if (m2 == 1 || m2 == 2) return 1;
        }
    }
    ssize q = digit_at(x, p) ? p + 1 : p;
    if (!date_sep(at(x, q))) return 0;
    q++;
    ssize m = run_digits(x, q);
    if (!((m == 1 || m == 2) && date_sep(at(x, q + m)))) return 0;
    ssize m2 = run_digits(x, q + m + 1);
    return m2 >= 2 && m2 <= 4;
}

/* (?=(?:[ \-.()/]{0,3}+\d){8}) at p */
static int eight_digits(const Ctx *x, ssize p) {
    ssize q = p;
    for (int i = 0; i < 8; i++) {
        int k = 0;
        while (k < 3 && num_sep(at(x, q))) q++, k++;
        if (!digit_at(x, q)) return 0;
        q++;
    }
    return 1;
}

/* _NUM matched at j: where it ends, or -1. */
static ssize num_at(const Ctx *x, ssize j) {
    int c0 = x->s[j];
    if (!(DIGIT(c0) || c0 == '+' || c0 == '(')) return -1;
    if (j > 0 && lb_number(x->s[j - 1])) return -1;
    ssize p = j + 1;
    if (looks_ipv4(x, p) || looks_date(x, p) || !eight_digits(x, p)) return -1;
    ssize run = run_digits(x, p);
    /* \d{8,18}+ */
    if (run >= 8) {
        ssize e = p + (run < 18 ? run : 18);
        if (!word_at(x, e)) return e;
    }
    /* \d{0,5}+(?:[ \-.()/]{1,3}+\d{1,6}+){1,5}: as many groups as there are, then one fewer, ... */
    {
        ssize ends[5];
        int k = 0;
        ssize q = p + (run < 5 ? run : 5);
        while (k < 5) {
            int sp = 0;
            while (sp < 3 && num_sep(at(x, q + sp))) sp++;
            if (!sp) break;
            ssize d = run_digits(x, q + sp);
            if (!d) break;
            q += sp + (d < 6 ? d : 6);
            ends[k++] = q;
        }
        for (int i = k - 1; i >= 0; i--)
            if (!word_at(x, ends[i])) return ends[i];
    }
    /* (?<=\+)\d{1,3}+[ \-.]\d{6,14}+ */
    if (c0 == '+') {
        ssize d = run_digits(x, p);
        if (d >= 1) {
            ssize q = p + (d < 3 ? d : 3);
            int c = at(x, q);
            if (c == ' ' || c == '-' || c == '.') {
                ssize d2 = run_digits(x, q + 1);
                if (d2 >= 6) {
                    ssize e = q + 1 + (d2 < 14 ? d2 : 14);
                    if (!word_at(x, e)) return e;
                }
            }
        }
    }
    return -1;
}

static ssize num_search(const Ctx *x, ssize pos, ssize *end) {
    const Py_UCS1 *s = x->s;
    for (ssize j = pos; j < x->n; j++) {
        int c = s[j];
        if (!(DIGIT(c) || c == '+' || c == '(')) continue;
        ssize e = num_at(x, j);
        if (e >= 0) {
            *end = e;
            return j;
        }
        /* the rest of a run of digits comes after a digit, which the look-behind refuses */
        if (DIGIT(c))
            while (j + 1 < x->n && DIGIT(s[j + 1])) j++;
    }
    return -1;
}

static ssize count_char(const Ctx *x, ssize a, ssize b, int c) {
    ssize k = 0;
    for (ssize i = a; i < b; i++) k += x->s[i] == c;
    return k;
}

/* A maximal word (a run of \w) in [a, b), the span's ends counting as edges, equal to one of `words`
 * ignoring ASCII case: (?i)\b(?:w1|w2|...)\b searched in text[a:b]. */
static int has_word(const Ctx *x, ssize a, ssize b, const char *const *words) {
    ssize i = a;
    while (i < b) {
        if (!is_word[x->s[i]]) {
            i++;
            continue;
        }
        ssize j = i;
        while (j < b && is_word[x->s[j]]) j++;
        for (const char *const *w = words; *w; w++) {
            if (LOWER(x->s[i]) != (unsigned char)(*w)[0]) continue;
            ssize k = (ssize)strlen(*w);
            if (k == j - i && ieq_n(x, i, *w, k)) return 1;
        }
        i = j;
    }
    return 0;
}

static const char *const PHONE_WORDS[] = {"phone", "tel", "telephone", "call", "mobile", "cell", "fax",
                                          "whatsapp", "sms", "text", "ring", "dial", NULL};
static const char *const NOT_PHONE_WORDS[] = {"order", "invoice", "ticket", "ref", "reference", "room", "id",
                                              "account", "acct", "tracking", "po", "isbn", "issn", "zip",
                                              "serial", "lot", "sku", "part", "model", "box", NULL};

static int not_phone_context(const Ctx *x, ssize a, ssize b) {
    for (ssize i = a; i < b; i++) {
        if (x->s[i] == '#') return 1;
        if (i + 3 <= b && LOWER(x->s[i]) == 'n' && LOWER(x->s[i + 1]) == 'o' && x->s[i + 2] == '.') return 1;
    }
    return has_word(x, a, b, NOT_PHONE_WORDS);
}

/* _DATE.match(candidate): \d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4} at a, within b */
static int date_prefix(const Ctx *x, ssize a, ssize b) {
#define D(i) ((i) < b && DIGIT(x->s[i]))
#define S(i) ((i) < b && date_sep(x->s[i]))
    if (D(a) && D(a + 1) && D(a + 2) && D(a + 3) && S(a + 4)) {
        ssize q = a + 5;
        if (D(q) && D(q + 1) && S(q + 2) && D(q + 3)) return 1;
        if (D(q) && !D(q + 1) && S(q + 1) && D(q + 2)) return 1;
    }
    ssize q;
    if (D(a) && D(a + 1) && S(a + 2)) q = a + 3;
    else if (D(a) && S(a + 1)) q = a + 2;
    else return 0;
    if (D(q) && D(q + 1) && S(q + 2)) q += 3;
    else if (D(q) && S(q + 1)) q += 2;
    else return 0;
    return D(q) && D(q + 1);
#undef D
#undef S
}

/* \d{3}([-. ])\d{2}\1\d{4}, the whole candidate: the shape SSNs (and serials) are written in. */
static int ssn_shape(const Ctx *x, ssize a, ssize b) {
    if (b - a != 11) return 0;
    const Py_UCS1 *c = x->s + a;
    int sep = c[3];
    if (!(sep == '-' || sep == '.' || sep == ' ') || c[6] != sep) return 0;
    for (int i = 0; i < 11; i++)
        if (i != 3 && i != 6 && !DIGIT(c[i])) return 0;
    return 1;
}

static int is_ssn(const Ctx *x, ssize a, ssize b, const char *digits) {
    if (!ssn_shape(x, a, b)) return 0;
    if (!memcmp(digits, "000", 3) || !memcmp(digits, "666", 3) || digits[0] == '9') return 0;
    if (!memcmp(digits + 3, "00", 2) || !memcmp(digits + 5, "0000", 4)) return 0;
    return strcmp(digits, "078051120") && strcmp(digits, "457555462") && strcmp(digits, "219099999");
}

static int luhn(const char *d, int n) {
    int total = 0;
    for (int i = 0; i < n; i++) {
        int v = d[n - 1 - i] - '0';
        if (i % 2) {
            v *= 2;
            if (v > 9) v -= 9;
        }
        total += v;
    }
    return total % 10 == 0;
}

static int card_issuer(const char *d, int n) {
    int two = (d[0] - '0') * 10 + (d[1] - '0');
    int three = two * 10 + (d[2] - '0');
    int four = three * 10 + (d[3] - '0');
    if (d[0] == '4' && (n == 13 || n == 16 || n == 19)) return 1;
    if (((51 <= two && two <= 55) || (2221 <= four && four <= 2720)) && n == 16) return 1;
    if ((two == 34 || two == 37) && n == 15) return 1;
    if ((four == 6011 || two == 65 || (644 <= three && three <= 649)) && 16 <= n && n <= 19) return 1;
    if (3528 <= four && four <= 3589 && 16 <= n && n <= 19) return 1;
    if (((300 <= three && three <= 305) || two == 36 || two == 38 || two == 39) && 14 <= n && n <= 19) return 1;
    if (two == 62 && 16 <= n && n <= 19) return 1;
    if ((two == 50 || (56 <= two && two <= 58)) && 12 <= n && n <= 19) return 1;
    return 0;
}

static int is_card(const Ctx *x, ssize a, ssize b, const char *digits, int nd) {
    if (nd < 12 || nd > 19) return 0;
    /* _CARD_SEPARATORS: digit groups joined by one separator character, the same one throughout */
    int sep = 0;
    for (ssize i = a; i < b; i++) {
        int c = x->s[i];
        if (DIGIT(c)) continue;
        if (!(c == ' ' || c == '.' || c == '-') || i == a || i + 1 == b || !DIGIT(x->s[i + 1])) return 0;
        if (sep && c != sep) return 0;
        sep = c;
    }
    return card_issuer(digits, nd) && luhn(digits, nd);
}

static int nanp_valid(const char *national) {
    if (nanp_table == NULL)
        return call_bool(cb_nanp_valid, PyUnicode_FromStringAndSize(national, 10));
    const unsigned char *blob = (const unsigned char *)PyBytes_AS_STRING(nanp_table);
    const uint32_t *offsets = (const uint32_t *)blob;
    const uint16_t *rows = (const uint16_t *)(blob + 1001 * sizeof(uint32_t));
    int area = (national[0] - '0') * 100 + (national[1] - '0') * 10 + (national[2] - '0');
    for (uint32_t r = offsets[area]; r < offsets[area + 1]; r++) {
        const uint16_t *m = rows + (size_t)r * 7;
        int ok = 1;
        for (int i = 0; i < 7 && ok; i++) ok = (m[i] >> (national[3 + i] - '0')) & 1;
        if (ok) return 1;
    }
    return 0;
}

static int is_phone(const Ctx *x, ssize a, ssize b, const char *digits, int n) {
    if (n < 7 || n > 15) return 0;
    const Py_UCS1 *s = x->s;
    int zz = b - a >= 2 && s[a] == '0' && s[a + 1] == '0';
    int international = s[a] == '+' || zz;
    const char *national = NULL;
    if (international) {
        if (n < 8 || (zz && n < 10)) return 0;
    } else if (digits[0] == '0') {
        if (n < 9 || n > 13) return 0;
    } else {
        national = (n == 11 && digits[0] == '1') ? digits + 1 : digits;
        if ((int)strlen(national) != 10 || national[0] == '0' || national[0] == '1' || national[3] == '0' ||
            national[3] == '1')
            return 0;
    }
    ssize b0 = a - 30 > 0 ? a - 30 : 0, b20 = a - 20 > 0 ? a - 20 : 0;
    if (date_prefix(x, a, b) || not_phone_context(x, b20, a)) return 0;
    if (international) {
        PyObject *text;
        if (zz) {
            PyObject *rest = slice(x, a + 2, b);
            if (rest == NULL) return -1;
            text = PyUnicode_FromFormat("+%U", rest);
            Py_DECREF(rest);
        } else {
            text = slice(x, a, b);
        }
        return call_bool(cb_valid_number, text);
    }
    int separated = n != b - a;
    if (!separated && !has_word(x, b0, a, PHONE_WORDS)) return 0;
    if (separated && count_char(x, a, b, '.') && !has_word(x, b0, a, PHONE_WORDS)) {
        /* "10.0.12.34", "3.14159265": dotted numbers are phones only when introduced as such */
        if (count_char(x, a, b, '.') != 2 || b - a != 12 || s[a + 3] != '.' || s[a + 7] != '.') return 0;
    }
    if (ssn_shape(x, a, b)) return 0;
    if (national) return nanp_valid(national);
    return call_bool(cb_trunk_valid, slice(x, a, b));
}

/* _classify: the detector a candidate [a, b) is, or NULL; *err on an exception. */
static PyObject *classify(const Ctx *x, ssize a, ssize b, int *err) {
    if (b <= a || x->s[b - 1] == ')' || count_char(x, a, b, '(') != count_char(x, a, b, ')')) return NULL;
    if (count_char(x, a, b, '.') && ipv4_full(x, a, b)) return NULL;
    char digits[72];
    int nd = 0;
    for (ssize i = a; i < b && nd < 71; i++)
        if (DIGIT(x->s[i])) digits[nd++] = (char)x->s[i];
    digits[nd] = 0;
    if ((x->flags & F_SSN) && nd == 9 && is_ssn(x, a, b, digits)) return s_ssn;
    if ((x->flags & F_CARD) && is_card(x, a, b, digits, nd)) return s_card;
    if (x->flags & F_PHONE) {
        int r = is_phone(x, a, b, digits, nd);
        if (r < 0) *err = 1;
        if (r > 0) return s_phone;
    }
    return NULL;
}

/* _number: classify a candidate, record what it holds; where that ends, or -1 when nothing. */
static ssize number(Ctx *x, ssize a, ssize b, int *err) {
    const Py_UCS1 *s = x->s;
    if (s[a] == '(' && count_char(x, a, b, '(') > count_char(x, a, b, ')')) a++;
    ssize start = a;
    PyObject *hit;
    ssize first_space = -1;
    for (ssize i = a; i < b; i++)
        if (s[i] == ' ') {
            first_space = i;
            break;
        }
    if (first_space >= 0) {
        ssize longest = 0, chunk = a;
        for (ssize i = a; i <= b; i++)
            if (i == b || s[i] == ' ') {
                if (i - chunk > longest) longest = i - chunk;
                chunk = i + 1;
            }
        if (longest >= 9 && !(first_space > a && s[a] == '+' && first_space - a <= 4)) {
            /* A long group joined to others by spaces: the first group is one value or none. */
            ssize head = first_space - a;
            if (head < 9) return start + head;
            hit = classify(x, a, first_space, err);
            if (*err) return -1;
            if (hit && add(x, start, first_space, hit) < 0) *err = 1;
            return start + head;
        }
    }
    hit = classify(x, a, b, err);
    if (*err) return -1;
    if (hit) {
        if (add(x, start, b, hit) < 0) *err = 1;
        return b;
    }
    if (first_space < 0) return -1;
    /* the groups before a space: "10.0.0.1 2024", "4111 1111 1111 1111 4012 8888 8888 1881" */
    ssize he = b - 1;
    while (he >= a && s[he] != ' ') he--;
    if (he < a) he = a;
    while (he > a) {
        while (he > a && s[he - 1] == ' ') he--;
        if (he - a >= 9) {
            hit = classify(x, a, he, err);
            if (*err) return -1;
            if (hit) {
                if (add(x, start, he, hit) < 0) *err = 1;
                return he;
            }
        }
        ssize k = he - 1;
        while (k >= a && s[k] != ' ') k--;
        he = k < a ? a : k;
    }
    return -1;
}

typedef struct {
    ssize start, end;
} Span;

static int span_cmp(const void *p, const void *q) {
    const Span *a = p, *b = q;
    if (a->start != b->start) return a->start < b->start ? -1 : 1;
    if (a->end != b->end) return a->end < b->end ? -1 : 1;
    return 0;
}

static int numbers(Ctx *x) {
    /* Values already found (a secret's, an IBAN's, an address's) are skipped whole. */
    ssize nc = PyList_GET_SIZE(x->found);
    Span *cov = NULL;
    if (nc) {
        cov = PyMem_Malloc(sizeof(Span) * (size_t)nc);
        if (cov == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (ssize i = 0; i < nc; i++) {
            PyObject *t = PyList_GET_ITEM(x->found, i);
            cov[i].start = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 0));
            cov[i].end = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 1));
        }
        if (PyErr_Occurred()) {
            PyMem_Free(cov);
            return -1;
        }
        int sorted = 1; /* usually: each pass appends in text order, and often only one pass finds anything */
        for (ssize i = 1; i < nc && sorted; i++) sorted = span_cmp(&cov[i - 1], &cov[i]) <= 0;
        if (!sorted) qsort(cov, (size_t)nc, sizeof(Span), span_cmp);
    }
    ssize ci = 0, pos = 0, start, mend = 0;
    int err = 0;
    while ((start = num_search(x, pos, &mend)) >= 0) {
        while (ci < nc && cov[ci].end <= start) ci++;
        if (ci < nc && cov[ci].start <= start) {
            pos = cov[ci].end;
            continue;
        }
        ssize end = number(x, start, mend, &err);
        if (err) break;
        pos = (end < 0 || end <= start) ? mend : end;
    }
    PyMem_Free(cov);
    return err ? -1 : 0;
}

static int read_text(PyObject *text, Ctx *x, Py_UCS1 **owned);

/* ---- provider keys and overlaps ----------------------------------------------------------------------- */

/* Where a _PROVKEY match can start: each alternative begins with one of its hints at a fixed offset
 * ("github_pat_" six characters before "_pat_", "sk_live_" one before "k_live_"). Its matches are runs of
 * [\w-] between characters that are not, so they never overlap, and _PROVKEY.match at these starts finds
 * what finditer over the whole text finds, without trying the alternation at every position. */
static PyObject *py_provkey_starts(PyObject *self, PyObject *text) {
    Ctx c = {0};
    Py_UCS1 *owned;
    int r = read_text(text, &c, &owned);
    if (r <= 0) {
        if (r == 0) PyErr_SetString(PyExc_ValueError, "text the native passes cannot read (hints gave None)");
        return NULL;
    }
    const Ctx *x = &c;
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        PyMem_Free(owned);
        return NULL;
    }
    ssize last = -1;
    for (ssize i = 0; i + 1 < x->n; i++) {
        if (!(OPENING(x->s, i) & 2)) continue;
        ssize back = provkey_hint(x, i);
        ssize start = back >= 0 && i >= back ? i - back : -1;
        if (start < 0 || start == last) continue;
        PyObject *v = PyLong_FromSsize_t(start);
        if (v == NULL || PyList_Append(out, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(out);
            PyMem_Free(owned);
            return NULL;
        }
        Py_DECREF(v);
        last = start;
    }
    PyMem_Free(owned);
    /* starts found one or six characters back can come after a later hint's: text order, no repeats */
    if (PyList_Sort(out) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    ssize kept = 0, total = PyList_GET_SIZE(out);
    for (ssize i = 0; i < total; i++) {
        PyObject *v = PyList_GET_ITEM(out, i);
        if (kept && PyObject_RichCompareBool(PyList_GET_ITEM(out, kept - 1), v, Py_EQ) == 1) continue;
        if (kept != i) {
            Py_INCREF(v);
            PyList_SetItem(out, kept, v);
        }
        kept++;
    }
    if (PyList_SetSlice(out, kept, total, NULL) < 0) Py_CLEAR(out);
    return out;
}

typedef struct {
    ssize start, end, index;
} Hit;

static int hit_cmp(const void *p, const void *q) {
    const Hit *a = p, *b = q;
    if (a->start != b->start) return a->start < b->start ? -1 : 1;
    ssize la = a->end - a->start, lb = b->end - b->start;
    if (la != lb) return la > lb ? -1 : 1;
    return a->index < b->index ? -1 : (a->index > b->index);
}

/* detectors.resolve: non-overlapping findings in text order; where two overlap, the one starting first
 * (or the longer, or the one found first) wins. */
static PyObject *py_resolve(PyObject *self, PyObject *hits) {
    if (!PyList_Check(hits)) {
        PyErr_SetString(PyExc_TypeError, "hits must be a list");
        return NULL;
    }
    ssize n = PyList_GET_SIZE(hits);
    Hit *h = PyMem_Malloc(sizeof(Hit) * (size_t)(n ? n : 1));
    if (h == NULL) return PyErr_NoMemory();
    for (ssize i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(hits, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) < 2) {
            PyMem_Free(h);
            PyErr_SetString(PyExc_TypeError, "a finding is a (start, end, detector) tuple");
            return NULL;
        }
        h[i].start = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 0));
        h[i].end = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 1));
        h[i].index = i;
    }
    if (PyErr_Occurred()) {
        PyMem_Free(h);
        return NULL;
    }
    int sorted = 1;
    for (ssize i = 1; i < n && sorted; i++) sorted = hit_cmp(&h[i - 1], &h[i]) < 0;
    if (!sorted) qsort(h, (size_t)n, sizeof(Hit), hit_cmp);
    PyObject *out = PyList_New(0);
    ssize last_end = 0;
    for (ssize i = 0; out != NULL && i < n; i++) {
        if (i && h[i].start < last_end) continue;
        if (PyList_Append(out, PyList_GET_ITEM(hits, h[i].index)) < 0) Py_CLEAR(out);
        last_end = h[i].end;
    }
    PyMem_Free(h);
    return out;
}

/* ---- module ---------------------------------------------------------------------------------------------- */

/* The text as 1-byte characters: the string's own buffer, or a stand-in for a wider one (*owned, freed
 * by the caller). 0 when the Python passes must read it. */
static int read_text(PyObject *text, Ctx *x, Py_UCS1 **owned) {
    *owned = NULL;
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "text must be a str");
        return -1;
    }
    x->n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    if (kind == PyUnicode_1BYTE_KIND) {
        x->s = PyUnicode_1BYTE_DATA(text);
        return 1;
    }
    const void *data = PyUnicode_DATA(text);
    Py_UCS1 *buf = PyMem_Malloc((size_t)(x->n ? x->n : 1));
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (ssize i = 0; i < x->n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 256) {
            buf[i] = (Py_UCS1)c;
        } else if (Py_UNICODE_ISDECIMAL(c) || c == 0x130 || c == 0x131 || c == 0x17F || c == 0x212A) {
            PyMem_Free(buf); /* \d, or (?i) and lower() read it as an ASCII letter: İ ı ſ K */
            return 0;
        } else if (Py_UNICODE_ISALNUM(c)) {
            buf[i] = 0xAA; /* "ª": a letter, \w, like no ASCII one */
        } else if (Py_UNICODE_ISSPACE(c)) {
            buf[i] = 0x85; /* NEL: \s, not the space the separators name */
        } else {
            buf[i] = 0xA7; /* "§": neither */
        }
    }
    x->s = buf;
    *owned = buf;
    return 1;
}

static PyObject *py_hints(PyObject *self, PyObject *text) {
    Ctx x = {0};
    Py_UCS1 *owned;
    int r = read_text(text, &x, &owned);
    if (r < 0) return NULL;
    if (r == 0) Py_RETURN_NONE;
    long h = hints_of(&x);
    PyMem_Free(owned);
    return PyLong_FromLong(h);
}

static PyObject *py_scan(PyObject *self, PyObject *args) {
    PyObject *text, *found;
    int flags;
    if (!PyArg_ParseTuple(args, "UiO!", &text, &flags, &PyList_Type, &found)) return NULL;
    if (cb_valid_number == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return NULL;
    }
    Ctx x = {0};
    Py_UCS1 *owned;
    int r = read_text(text, &x, &owned);
    if (r < 0) return NULL;
    if (r == 0) Py_RETURN_FALSE;
    x.flags = flags;
    x.found = found;
    int has_at = memchr(x.s, '@', (size_t)x.n) != NULL, has_dot = memchr(x.s, '.', (size_t)x.n) != NULL;
    int err = ((flags & F_EMAIL) && has_at && emails(&x) < 0) || ((flags & F_IBAN) && ibans(&x) < 0) ||
              ((flags & F_IP) && has_dot && ipv4s(&x) < 0) ||
              ((flags & (F_SSN | F_CARD | F_PHONE)) && numbers(&x) < 0);
    PyMem_Free(owned);
    if (err) return NULL;
    Py_RETURN_TRUE;
}

static PyObject *py_configure(PyObject *self, PyObject *args) {
    PyObject *iban, *valid, *trunk, *nanp, *table;
    if (!PyArg_ParseTuple(args, "OOOOO", &iban, &valid, &trunk, &nanp, &table)) return NULL;
    if (table != Py_None) {
        if (!PyBytes_Check(table) || PyBytes_GET_SIZE(table) < (ssize)(1001 * sizeof(uint32_t))) {
            PyErr_SetString(PyExc_ValueError, "nanp table: bytes of 1001 offsets and rows");
            return NULL;
        }
        const uint32_t *offsets = (const uint32_t *)PyBytes_AS_STRING(table);
        ssize rows = (PyBytes_GET_SIZE(table) - (ssize)(1001 * sizeof(uint32_t))) / (ssize)(7 * sizeof(uint16_t));
        if ((ssize)offsets[1000] != rows) {
            PyErr_SetString(PyExc_ValueError, "nanp table: offsets and rows disagree");
            return NULL;
        }
    }
    Py_XSETREF(cb_iban_registered, Py_NewRef(iban));
    Py_XSETREF(cb_valid_number, Py_NewRef(valid));
    Py_XSETREF(cb_trunk_valid, Py_NewRef(trunk));
    Py_XSETREF(cb_nanp_valid, Py_NewRef(nanp));
    Py_XSETREF(nanp_table, table == Py_None ? NULL : Py_NewRef(table));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"hints", py_hints, METH_O, "Bit mask of the substrings the secret detectors look for, or None (Python reads it)."},
    {"scan", py_scan, METH_VARARGS,
     "scan(text, flags, found): append e-mail, IBAN, IPv4 and number findings; False: Python reads it."},
    {"provkey_starts", py_provkey_starts, METH_O, "Where a provider key can start."},
    {"resolve", py_resolve, METH_O, "detectors.resolve, in C."},
    {"configure", py_configure, METH_VARARGS,
     "configure(iban_registered, valid_number, trunk_valid, nanp_valid, nanp_table)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__scan(void) {
    for (int c = 0; c < 256; c++) {
        is_word[c] = Py_UNICODE_ISALNUM((Py_UCS4)c) || c == '_';
        is_space[c] = Py_UNICODE_ISSPACE((Py_UCS4)c);
    }
    static const char *const exact[] = {"--", "ey", NULL};
    static const char *const any_case[] = {"ea", "se", "ke", "to", "pa", "pw", NULL};
    for (const char *const *o = exact; *o; o++) openings[(unsigned char)(*o)[0] | (unsigned char)(*o)[1] << 8] |= 1;
    for (const char *const *o = any_case; *o; o++)
        for (int v = 0; v < 4; v++) {
            unsigned a = (unsigned char)(*o)[0], b = (unsigned char)(*o)[1];
            openings[(v & 1 ? a - 32 : a) | (v & 2 ? b - 32 : b) << 8] |= 1;
        }
    for (const char *c = "0123456789abcdefABCDEF:"; *c; c++) openings[':' | (unsigned char)*c << 8] |= 1;
    static const char *const provkey[] = {"sk", "gh", "_p", "k_", "xo", "AI", "AK", "AS", "AB", "AC", NULL};
    for (const char *const *o = provkey; *o; o++) openings[(unsigned char)(*o)[0] | (unsigned char)(*o)[1] << 8] |= 2;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    s_email = PyUnicode_InternFromString("email");
    s_iban = PyUnicode_InternFromString("iban");
    s_ip = PyUnicode_InternFromString("ip");
    s_ssn = PyUnicode_InternFromString("us_ssn");
    s_card = PyUnicode_InternFromString("card");
    s_phone = PyUnicode_InternFromString("phone");
    if (!s_email || !s_iban || !s_ip || !s_ssn || !s_card || !s_phone) {
        Py_DECREF(m);
        return NULL;
    }
#define C(name, v)                                                                                          \
    if (PyModule_AddIntConstant(m, name, v) < 0) {                                                          \
        Py_DECREF(m);                                                                                       \
        return NULL;                                                                                        \
    }
    C("EMAIL", F_EMAIL) C("IBAN", F_IBAN) C("IP", F_IP) C("SSN", F_SSN) C("CARD", F_CARD) C("PHONE", F_PHONE)
    C("H_PKEY", H_PKEY) C("H_JWT", H_JWT) C("H_PROVKEY", H_PROVKEY) C("H_BEARER", H_BEARER) C("H_KEY", H_KEY)
    C("H_SECRET", H_SECRET) C("H_TOKEN", H_TOKEN) C("H_PASSW", H_PASSW) C("H_PWD", H_PWD) C("H_V6", H_V6)
    C("H_AT", H_AT) C("H_DOT", H_DOT)
#undef C
    return m;
}
