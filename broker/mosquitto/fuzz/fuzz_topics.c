/*
 * libFuzzer target: rc_matches, rc_covers and rc_filter_valid against a simple reference (split both
 * strings into level arrays, then store/topics.py's loops word for word, plus MQTT 4.7.2's '$' rule).
 * Input: pattern, a 0x00 byte, topic (or filter).
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *        -I.. fuzz_topics.c ../registry_core.c -o fuzz_topics
 */
#include <stdlib.h>
#include <string.h>

#include "registry_core.h"

struct levels {
	size_t n;
	const char *s[4096];
	size_t len[4096];
};

static void split(const char *s, size_t len, struct levels *out)
{
	size_t start = 0, i;

	out->n = 0;
	for(i = 0; i <= len; i++){
		if(i == len || s[i] == '/'){
			out->s[out->n] = s + start;
			out->len[out->n] = i - start;
			out->n++;
			start = i + 1;
		}
	}
}

static int eq(const struct levels *l, size_t i, const char *word)
{
	return l->len[i] == strlen(word) && memcmp(l->s[i], word, l->len[i]) == 0;
}

static int same(const struct levels *a, size_t i, const struct levels *b, size_t j)
{
	return a->len[i] == b->len[j] && memcmp(a->s[i], b->s[j], a->len[i]) == 0;
}

static struct levels P, T;

static int ref_matches(void)
{
	size_t i;
	for(i = 0; i < P.n; i++){
		if(eq(&P, i, "#")) return 1;
		if(i >= T.n) return 0;
		if(!eq(&P, i, "+") && !same(&P, i, &T, i)) return 0;
	}
	return P.n == T.n;
}

static int ref_covers(void)
{
	size_t i;
	for(i = 0; i < P.n; i++){
		if(eq(&P, i, "#")) return 1;
		if(i >= T.n) return 0;
		if(eq(&T, i, "#")) return 0;
		if(eq(&P, i, "+")) continue;
		if(eq(&T, i, "+") || !same(&P, i, &T, i)) return 0;
	}
	return P.n == T.n;
}

static int ref_valid(const char *p, size_t len)
{
	size_t i;
	if(len == 0 || len > RC_MAX_PATTERN || memchr(p, 0, len)) return 0;
	for(i = 0; i < P.n; i++){
		if(memchr(P.s[i], '#', P.len[i]) && (!eq(&P, i, "#") || i != P.n - 1)) return 0;
		if(memchr(P.s[i], '+', P.len[i]) && !eq(&P, i, "+")) return 0;
	}
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data, *nul;
	size_t plen, tlen;
	int dollar, wild;

	if(size > 4000) return 0;
	nul = memchr(text, 0, size);
	plen = nul ? (size_t)(nul - text) : size;
	tlen = nul ? size - plen - 1 : 0;
	split(text, plen, &P);
	split(text + plen + (nul ? 1 : 0), tlen, &T);
	dollar = tlen > 0 && text[plen + 1] == '$';
	wild = eq(&P, 0, "+") || eq(&P, 0, "#");
	if(rc_matches(text, plen, text + plen + (nul ? 1 : 0), tlen) != (ref_matches() && !(dollar && wild))) abort();
	if(rc_covers(text, plen, text + plen + (nul ? 1 : 0), tlen) != (ref_covers() && !(dollar && wild))) abort();
	if(rc_filter_valid(text, plen) != ref_valid(text, plen)) abort();
	return 0;
}
