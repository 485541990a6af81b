/*
 * client-registry: the registry plugin for Mosquitto 2.0 (plugin_protocol.md beside this file).
 *
 * Holds every account the registry manages (loaded from a snapshot at start, changed by the service's
 * control messages on $CONTROL/client-registry/v1) and answers MOSQ_EVT_BASIC_AUTH and
 * MOSQ_EVT_ACL_CHECK for them; reports unknown names, knocks and presence to the service over its
 * AF_UNIX datagram socket. Parsing, the table, SHA-256/HMAC and topic matching are in registry_core.c.
 *
 * Options: plugin_opt_secret_file, plugin_opt_snapshot, plugin_opt_socket, plugin_opt_part all|first|last.
 *
 * The broker is single-threaded and every client waits on these callbacks, so nothing here blocks:
 * non-blocking sendto, dropped on failure, one log line per errno per minute. An attempt that finds the
 * service's queue full (Linux queues 10 datagrams per AF_UNIX socket: net.unix.max_dgram_qlen) waits in a
 * bounded FIFO, sent again in order at the next report or tick: 20 devices at once used to lose ~half their
 * first attempts, so their next connect was refused (issue 16).
 *
 * Two `plugin` lines naming this same file (attach mode: part first, part last) make Mosquitto dlopen it
 * twice; the dynamic loader hands back the same object, so the statics below are shared: the state is
 * initialised by the first instance and freed by the last cleanup.
 *
 * Client certificates (a listener with require_certificate true): an account bound to a certificate's
 * SHA-256 fingerprint is refused with any other certificate or none; an attempt reported to the service
 * carries the certificate's fingerprint, subject, issuer, serial and validity. Read with Mosquitto's
 * mosquitto_client_certificate() (an X509* we own and free) and libcrypto.
 *
 * Build: cc -shared -fPIC -O2 -Wall -Wextra -o registry_plugin.so registry_plugin.c registry_core.c -lcrypto
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "registry_core.h"

#define CONTROL_TOPIC "$CONTROL/client-registry/v1"
#define RESPONSE_TOPIC CONTROL_TOPIC "/response"

#define CAP_USERNAME 1024
#define CAP_PASSWORD 4096
#define CAP_CLIENTID 1024
#define CAP_ADDRESS 1024
#define CAP_CERT_NAME 1024 /* a certificate's subject or issuer as reported (longer ones are cut) */
#define CAP_SERIAL 64      /* RFC 5280 allows 20 octets; a longer serial is reported empty */
#define CERT_BLOCK (1 + 32 + 2 + CAP_CERT_NAME + 2 + CAP_CERT_NAME + 2 + CAP_SERIAL + 8 + 8)
#define DATAGRAM_MAX (32 * 1024)
#define KNOCK_NAMES 1024
#define KNOCK_BUCKETS 2048
#define KNOCK_INTERVAL_MS 1000
#define PRESENCE_INTERVAL_MS 250
#define PRESENCE_QUEUE_MAX 100000
#define OFFLINE_CLAIMS_MAX 65536
#define LOG_INTERVAL_SECONDS 60
#define ERRNO_SLOTS 256
#define ESCAPED 200

enum part { PART_ALL = 0, PART_FIRST = 1, PART_LAST = 2 };
static const char *const part_names[] = {"all", "first", "last"};

/* A client id held by a registry account: by a live session, or (persistent, offline) remembered. */
struct claim {
	struct claim *next;                  /* hash chain */
	struct claim *lru_prev, *lru_next;   /* offline list, oldest first */
	uint64_t hash;
	const struct mosquitto *live;        /* NULL: offline or dropped */
	unsigned refs;                       /* sessions pointing here */
	bool persistent, offline, in_table;
	uint16_t owner_len, cid_len;
	char *owner, *client_id;             /* in the same allocation */
};

struct session {
	struct session *next;
	uint64_t hash;
	const struct mosquitto *client;
	struct claim *claim;
};

struct presence {
	struct presence *next;
	uint8_t kind;
	uint16_t ulen, clen;
	char data[];
};

struct knock {
	struct knock *next;
	uint64_t hash;
	uint32_t count;
	uint16_t len;
	char name[];
};

/* An attempt the service's socket could not take yet (its datagram queue was full). */
struct pending {
	struct pending *next;
	size_t len;
	uint8_t data[];
};

/* Attempts waiting at most (~100 bytes each, 9.3 KiB at the caps): beyond, dropped and logged. */
#define PENDING_MAX 1024

struct instance {
	mosquitto_plugin_id_t *id;
	enum part part;
	bool owns_tick;
};

static struct {
	unsigned refs;
	unsigned parts; /* bit per part loaded */
	bool tick_registered;
	uint8_t secret[32];
	struct rc_state state;
	uint64_t seed;
	char *secret_path, *snapshot_path, *socket_path;

	int fd; /* -1: nothing reported */
	struct sockaddr_un addr;
	socklen_t addr_len;
	time_t last_logged[ERRNO_SLOTS];
	time_t last_malformed_log, last_claim_log, last_presence_log;

	struct session **sessions;
	size_t n_session_buckets, n_sessions;
	struct claim **claims;
	size_t n_claim_buckets, n_claims, n_offline;
	struct claim *lru_head, *lru_tail;

	struct pending *pending_head, *pending_tail;
	size_t n_pending;

	struct presence *presence_head, *presence_tail;
	size_t n_presence;
	bool reset_pending;
	int64_t last_presence_ms;

	struct knock *knock_buckets[KNOCK_BUCKETS];
	struct knock *knock_order[KNOCK_NAMES];
	size_t n_knocks;
	uint32_t knock_total;
	int64_t first_knock_ms; /* of the current period: a report covers a second from its first knock */
} g = {.fd = -1};

/* ---- time, logs ---- */

static int64_t monotonic_ms(void)
{
	struct timespec ts;
	if(clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t realtime_ms(void)
{
	struct timespec ts;
	if(clock_gettime(CLOCK_REALTIME, &ts) != 0) return 0;
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* True at most once per interval per slot (0 in *slot means never). */
static bool log_due(time_t *slot)
{
	time_t now = (time_t)(monotonic_ms() / 1000) + LOG_INTERVAL_SECONDS;
	if(*slot != 0 && now - *slot < LOG_INTERVAL_SECONDS) return false;
	*slot = now;
	return true;
}

static void log_send_error(int err)
{
	int slot = (err > 0 && err < ERRNO_SLOTS) ? err : 0;
	if(!log_due(&g.last_logged[slot])) return;
	mosquitto_log_printf(MOSQ_LOG_WARNING,
			"registry_plugin: cannot reach the registry at %s (%s); dropping reports "
			"(logged at most once a minute per error)", g.addr.sun_path, strerror(err));
}

static void send_datagram(const uint8_t *buf, size_t len, bool *sent)
{
	if(sent) *sent = false;
	if(g.fd < 0) return;
	if(sendto(g.fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)&g.addr, g.addr_len) < 0){
		log_send_error(errno);
	}else if(sent){
		*sent = true;
	}
}

static void pending_pop(void)
{
	struct pending *d = g.pending_head;

	g.pending_head = d->next;
	if(g.pending_head == NULL) g.pending_tail = NULL;
	g.n_pending--;
	explicit_bzero(d->data, d->len); /* it holds a password */
	free(d);
}

/* Send what waits, oldest first, until the socket is full again (the rest waits for the next try). */
static void pending_flush(void)
{
	while(g.pending_head && g.fd >= 0){
		if(sendto(g.fd, g.pending_head->data, g.pending_head->len, MSG_DONTWAIT | MSG_NOSIGNAL,
				(const struct sockaddr *)&g.addr, g.addr_len) < 0){
			if(errno == EAGAIN || errno == EWOULDBLOCK) return;
			log_send_error(errno); /* nobody listens (the service is down): dropped */
		}
		pending_pop();
	}
}

/* An attempt: sent now, or queued behind the ones waiting when the service's socket is full. */
static void send_attempt(const uint8_t *buf, size_t len)
{
	struct pending *d;

	if(g.fd < 0) return;
	pending_flush();
	if(g.pending_head == NULL){
		if(sendto(g.fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)&g.addr, g.addr_len) >= 0){
			return;
		}
		if(errno != EAGAIN && errno != EWOULDBLOCK){
			log_send_error(errno);
			return;
		}
	}
	if(g.n_pending >= PENDING_MAX || (d = malloc(sizeof(*d) + len)) == NULL){
		log_send_error(EAGAIN);
		return;
	}
	d->next = NULL;
	d->len = len;
	memcpy(d->data, buf, len);
	if(g.pending_tail) g.pending_tail->next = d; else g.pending_head = d;
	g.pending_tail = d;
	g.n_pending++;
}

static bool unlocked(void)
{
	return realtime_ms() < g.state.unlocked_until_ms;
}

/* ---- sessions and client-id claims ---- */

static uint64_t ptr_hash(const void *p)
{
	uintptr_t v = (uintptr_t)p;
	return rc_key_hash(g.seed, &v, sizeof(v));
}

static bool grow_buckets(void ***buckets, size_t *n, size_t count, size_t next_off, size_t hash_off)
{
	size_t new_n, i;
	void **b, *e, *next;

	if(*buckets && count < *n) return true;
	new_n = *n ? *n * 2 : 64;
	b = calloc(new_n, sizeof(void *));
	if(b == NULL) return *buckets != NULL;
	for(i = 0; i < *n; i++){
		for(e = (*buckets)[i]; e; e = next){
			uint64_t h;
			next = *(void **)((char *)e + next_off);
			memcpy(&h, (char *)e + hash_off, sizeof(h));
			*(void **)((char *)e + next_off) = b[h & (new_n - 1)];
			b[h & (new_n - 1)] = e;
		}
	}
	free(*buckets);
	*buckets = b;
	*n = new_n;
	return true;
}

static struct claim *claim_find(const char *cid, size_t len)
{
	uint64_t h;
	struct claim *c;

	if(g.claims == NULL) return NULL;
	h = rc_key_hash(g.seed, cid, len);
	for(c = g.claims[h & (g.n_claim_buckets - 1)]; c; c = c->next){
		if(c->hash == h && c->cid_len == len && memcmp(c->client_id, cid, len) == 0) return c;
	}
	return NULL;
}

static void lru_unlink(struct claim *c)
{
	if(!c->offline) return;
	if(c->lru_prev) c->lru_prev->lru_next = c->lru_next; else g.lru_head = c->lru_next;
	if(c->lru_next) c->lru_next->lru_prev = c->lru_prev; else g.lru_tail = c->lru_prev;
	c->lru_prev = c->lru_next = NULL;
	c->offline = false;
	g.n_offline--;
}

/* Takes the claim out of the table (and the offline list); frees it when no session points to it. */
static void claim_drop(struct claim *c)
{
	struct claim **link;

	lru_unlink(c);
	c->live = NULL;
	if(c->in_table){
		for(link = &g.claims[c->hash & (g.n_claim_buckets - 1)]; *link; link = &(*link)->next){
			if(*link == c){
				*link = c->next;
				break;
			}
		}
		c->in_table = false;
		g.n_claims--;
	}
	if(c->refs == 0) free(c);
}

static void claim_go_offline(struct claim *c)
{
	c->live = NULL;
	c->offline = true;
	c->lru_prev = g.lru_tail;
	c->lru_next = NULL;
	if(g.lru_tail) g.lru_tail->lru_next = c; else g.lru_head = c;
	g.lru_tail = c;
	g.n_offline++;
	while(g.n_offline > OFFLINE_CLAIMS_MAX) claim_drop(g.lru_head);
}

static struct claim *claim_new(const char *owner, size_t olen, const char *cid, size_t clen)
{
	struct claim *c;

	if(!grow_buckets((void ***)&g.claims, &g.n_claim_buckets, g.n_claims,
				offsetof(struct claim, next), offsetof(struct claim, hash))) return NULL;
	c = calloc(1, sizeof(*c) + olen + 1 + clen + 1);
	if(c == NULL) return NULL;
	c->owner = (char *)(c + 1);
	memcpy(c->owner, owner, olen);
	c->owner_len = (uint16_t)olen;
	c->client_id = c->owner + olen + 1;
	memcpy(c->client_id, cid, clen);
	c->cid_len = (uint16_t)clen;
	c->hash = rc_key_hash(g.seed, cid, clen);
	c->next = g.claims[c->hash & (g.n_claim_buckets - 1)];
	g.claims[c->hash & (g.n_claim_buckets - 1)] = c;
	c->in_table = true;
	g.n_claims++;
	return c;
}

static struct session **session_link(const struct mosquitto *client)
{
	struct session **link;

	if(g.sessions == NULL) return NULL;
	for(link = &g.sessions[ptr_hash(client) & (g.n_session_buckets - 1)]; *link; link = &(*link)->next){
		if((*link)->client == client) return link;
	}
	return NULL;
}

static void presence_add(uint8_t kind, const char *user, size_t ulen, const char *cid, size_t clen)
{
	struct presence *p;

	if(g.fd < 0) return;
	if(g.n_presence >= PRESENCE_QUEUE_MAX){
		if(log_due(&g.last_presence_log)){
			mosquitto_log_printf(MOSQ_LOG_WARNING,
					"registry_plugin: presence queue full (%d changes); dropping changes", PRESENCE_QUEUE_MAX);
		}
		return;
	}
	p = malloc(sizeof(*p) + ulen + clen);
	if(p == NULL) return;
	p->next = NULL;
	p->kind = kind;
	p->ulen = (uint16_t)ulen;
	p->clen = (uint16_t)clen;
	memcpy(p->data, user, ulen);
	memcpy(p->data + ulen, cid, clen);
	if(g.presence_tail) g.presence_tail->next = p; else g.presence_head = p;
	g.presence_tail = p;
	g.n_presence++;
}

/* The session of `client` ends (MOSQ_EVT_DISCONNECT). */
static void session_end(const struct mosquitto *client)
{
	struct session **link = session_link(client), *s;
	struct claim *c;
	const struct rc_account *owner;

	if(link == NULL) return;
	s = *link;
	*link = s->next;
	g.n_sessions--;
	c = s->claim;
	free(s);
	c->refs--;
	if(c->live == client){
		presence_add(0, c->owner, c->owner_len, c->client_id, c->cid_len);
		owner = rc_table_find(&g.state.table, c->owner, c->owner_len);
		if(c->persistent && owner && c->in_table){
			claim_go_offline(c);
		}else{
			claim_drop(c);
		}
	}else if(c->refs == 0 && !c->in_table){
		free(c);
	}
	/* Otherwise the same account took this client id over: the new session holds it, nothing to say. */
}

/* Step 4: is the client id held by another account's live session, or a persistent one that exists? */
static bool claim_conflicts(const struct rc_account *a, const char *cid, size_t clen)
{
	struct claim *c = claim_find(cid, clen);

	if(c == NULL) return false;
	if(c->owner_len == a->username_len && memcmp(c->owner, a->username, a->username_len) == 0) return false;
	if(c->live) return true;
	if(c->persistent && rc_table_find(&g.state.table, c->owner, c->owner_len)) return true;
	claim_drop(c); /* stale: its owner is gone */
	return false;
}

static void session_begin(const struct mosquitto *client, const struct rc_account *a, const char *cid, size_t clen)
{
	struct claim *c;
	struct session *s;
	size_t i;

	if(session_link(client)) session_end(client);
	c = claim_find(cid, clen);
	if(c && !(c->owner_len == a->username_len && memcmp(c->owner, a->username, a->username_len) == 0)){
		claim_drop(c);
		c = NULL;
	}
	if(c == NULL) c = claim_new(a->username, a->username_len, cid, clen);
	if(c == NULL) return; /* out of memory: the login stands, untracked */
	lru_unlink(c);
	c->live = client;
	c->persistent = !mosquitto_client_clean_session(client);
	if(!grow_buckets((void ***)&g.sessions, &g.n_session_buckets, g.n_sessions,
				offsetof(struct session, next), offsetof(struct session, hash))){
		claim_drop(c);
		return;
	}
	s = malloc(sizeof(*s));
	if(s == NULL){
		claim_drop(c);
		return;
	}
	s->client = client;
	s->hash = ptr_hash(client);
	s->claim = c;
	c->refs++;
	i = s->hash & (g.n_session_buckets - 1);
	s->next = g.sessions[i];
	g.sessions[i] = s;
	g.n_sessions++;
	presence_add(1, a->username, a->username_len, cid, clen);
}

/* ---- client certificates ---- */

/* The client's certificate (NULL: none, or not a TLS listener with require_certificate). The caller frees it
 * with X509_free: mosquitto_client_certificate() returns SSL_get_peer_certificate(), which takes a reference. */
static X509 *client_certificate(const struct mosquitto *client)
{
	return (X509 *)mosquitto_client_certificate(client);
}

/* SHA-256 of the certificate's DER encoding: what an account is bound to (store side: the same digest). */
static bool certificate_fingerprint(X509 *cert, uint8_t out[32])
{
	unsigned int len = 0;
	return X509_digest(cert, EVP_sha256(), out, &len) == 1 && len == 32;
}

/* Step 6: an account bound to a certificate admits that certificate only. */
static bool certificate_matches(const struct rc_account *a, const struct mosquitto *client)
{
	X509 *cert;
	uint8_t fingerprint[32];
	bool ok;

	if(!(a->flags & RC_CERT)) return true;
	cert = client_certificate(client);
	if(cert == NULL) return false;
	ok = certificate_fingerprint(cert, fingerprint) && rc_ct_equal(fingerprint, a->certificate, 32);
	X509_free(cert);
	return ok;
}

/* A name (subject or issuer) as RFC 2253 text in UTF-8, cut at the cap; the length written. */
static size_t name_text(const X509_NAME *name, char *out, size_t cap)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL;
	long len;
	size_t n = 0;

	if(bio == NULL) return 0;
	/* RFC 2253 escaping (control characters as \XX) but UTF-8 kept as UTF-8: the service shows it. */
	if(X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0){
		len = BIO_get_mem_data(bio, &data);
		if(len > 0 && data != NULL){
			n = (size_t)len < cap ? (size_t)len : cap;
			memcpy(out, data, n);
		}
	}
	BIO_free(bio);
	return n;
}

static int64_t time_seconds(const ASN1_TIME *t)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	if(t == NULL || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
	return (int64_t)timegm(&tm);
}

/* Appends the certificate block of an attempt (plugin_protocol.md, "Datagrams"): nothing without one. */
static uint8_t *put_certificate(uint8_t *p, const struct mosquitto *client)
{
	X509 *cert = client_certificate(client);
	const ASN1_INTEGER *serial;
	uint8_t fingerprint[32];
	char name[CAP_CERT_NAME];
	size_t n;
	int slen;

	if(cert == NULL) return p;
	if(!certificate_fingerprint(cert, fingerprint)){
		X509_free(cert);
		return p;
	}
	*p++ = 'C';
	memcpy(p, fingerprint, 32);
	p += 32;
	n = name_text(X509_get_subject_name(cert), name, sizeof(name));
	p = rc_put16(p, (uint16_t)n);
	memcpy(p, name, n);
	p += n;
	n = name_text(X509_get_issuer_name(cert), name, sizeof(name));
	p = rc_put16(p, (uint16_t)n);
	memcpy(p, name, n);
	p += n;
	serial = X509_get0_serialNumber(cert);
	slen = serial ? ASN1_STRING_length(serial) : 0;
	if(slen < 0 || slen > CAP_SERIAL) slen = 0;
	p = rc_put16(p, (uint16_t)slen);
	if(slen > 0) memcpy(p, ASN1_STRING_get0_data(serial), (size_t)slen);
	p += slen;
	p = rc_put64(p, (uint64_t)time_seconds(X509_get0_notBefore(cert)));
	p = rc_put64(p, (uint64_t)time_seconds(X509_get0_notAfter(cert)));
	X509_free(cert);
	return p;
}

/* ---- reports ---- */

static uint8_t *put_str(uint8_t *p, const void *s, size_t len)
{
	p = rc_put16(p, (uint16_t)len);
	if(len) memcpy(p, s, len);
	return p + len;
}

static void report_attempt(const struct mosquitto *client, uint8_t kind, const char *username, const char *password)
{
	static const size_t caps[4] = {CAP_USERNAME, CAP_PASSWORD, CAP_CLIENTID, CAP_ADDRESS};
	uint8_t datagram[4 + 2 + 4 * 2 + CAP_USERNAME + CAP_PASSWORD + CAP_CLIENTID + CAP_ADDRESS + CERT_BLOCK];
	uint8_t *p = datagram;
	const char *fields[4];
	size_t lengths[4];
	int i;

	if(g.fd < 0) return;
	fields[0] = username;
	fields[1] = password;
	fields[2] = mosquitto_client_id(client);
	fields[3] = mosquitto_client_address(client);
	for(i = 0; i < 4; i++){
		lengths[i] = fields[i] ? strnlen(fields[i], caps[i] + 1) : 0;
		if(lengths[i] > caps[i]) return; /* over a cap: refused, not reported */
	}
	memcpy(p, "CRK2", 4);
	p += 4;
	*p++ = (uint8_t)(mosquitto_client_protocol_version(client) & 0xff);
	*p++ = kind;
	for(i = 0; i < 4; i++) p = put_str(p, fields[i], lengths[i]);
	p = put_certificate(p, client);
	send_attempt(datagram, (size_t)(p - datagram));
	/* Keep passwords out of the broker's stack (and so out of core dumps). */
	explicit_bzero(datagram, (size_t)(p - datagram));
}

static void knock_count(const char *username)
{
	size_t len = strnlen(username, CAP_USERNAME + 1);
	uint64_t h;
	struct knock *k;

	if(g.fd < 0 || len > CAP_USERNAME) return;
	if(g.knock_total == 0) g.first_knock_ms = monotonic_ms();
	if(g.knock_total < UINT32_MAX) g.knock_total++;
	h = rc_key_hash(g.seed, username, len);
	for(k = g.knock_buckets[h & (KNOCK_BUCKETS - 1)]; k; k = k->next){
		if(k->hash == h && k->len == len && memcmp(k->name, username, len) == 0){
			if(k->count < UINT32_MAX) k->count++;
			return;
		}
	}
	if(g.n_knocks >= KNOCK_NAMES) return; /* counted in the total only */
	k = malloc(sizeof(*k) + len);
	if(k == NULL) return;
	k->hash = h;
	k->count = 1;
	k->len = (uint16_t)len;
	memcpy(k->name, username, len);
	k->next = g.knock_buckets[h & (KNOCK_BUCKETS - 1)];
	g.knock_buckets[h & (KNOCK_BUCKETS - 1)] = k;
	g.knock_order[g.n_knocks++] = k;
}

static void knocks_clear(void)
{
	size_t i;
	for(i = 0; i < g.n_knocks; i++) free(g.knock_order[i]);
	memset(g.knock_buckets, 0, sizeof(g.knock_buckets));
	g.n_knocks = 0;
	g.knock_total = 0;
}

static void knocks_send(void)
{
	static uint8_t datagram[DATAGRAM_MAX];
	uint8_t *p = datagram + 4 + 4 + 2;
	uint16_t n = 0;
	size_t i;

	memcpy(datagram, "CRN1", 4);
	rc_put32(datagram + 4, g.knock_total);
	for(i = 0; i < g.n_knocks; i++){
		struct knock *k = g.knock_order[i];
		if((size_t)(p - datagram) + 2 + k->len + 4 > DATAGRAM_MAX) break; /* the rest: in total only */
		p = put_str(p, k->name, k->len);
		p = rc_put32(p, k->count);
		n++;
	}
	rc_put16(datagram + 8, n);
	send_datagram(datagram, (size_t)(p - datagram), NULL);
	knocks_clear();
}

static void presence_send(void)
{
	static uint8_t datagram[DATAGRAM_MAX];
	struct presence *e;
	uint8_t *p;
	uint16_t n;
	bool sent;

	do{
		memcpy(datagram, "CRP1", 4);
		datagram[4] = g.reset_pending ? 1 : 0;
		p = datagram + 4 + 1 + 2;
		n = 0;
		while((e = g.presence_head) != NULL && n < UINT16_MAX
				&& (size_t)(p - datagram) + 1 + 2 + e->ulen + 2 + e->clen <= DATAGRAM_MAX){
			*p++ = e->kind;
			p = put_str(p, e->data, e->ulen);
			p = put_str(p, e->data + e->ulen, e->clen);
			n++;
			g.presence_head = e->next;
			if(g.presence_head == NULL) g.presence_tail = NULL;
			g.n_presence--;
			free(e);
		}
		rc_put16(datagram + 5, n);
		send_datagram(datagram, (size_t)(p - datagram), &sent);
		if(sent) g.reset_pending = false;
	}while(g.presence_head != NULL);
}

/* ---- callbacks ---- */

#define KICKS_LOGGED 10

/* ctx: the number of accounts kicked so far by this control message (the first few are named). */
static void kick_username(void *ctx, const char *username)
{
	unsigned *kicked = ctx;
	char escaped[ESCAPED];

	if(++*kicked <= KICKS_LOGGED){
		rc_escape(username, strlen(username), escaped, sizeof(escaped));
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "registry_plugin: disconnecting the sessions of %s "
				"(account changed or removed)", escaped);
	}
	mosquitto_kick_client_by_username(username, false);
}

/* Accept, refuse or (part first) defer a registry account's login: steps 3-8. */
static int auth_account(const struct rc_account *a, struct mosquitto *client, const char *username,
		const char *password)
{
	const char *cid = mosquitto_client_id(client);
	size_t clen = cid ? strnlen(cid, CAP_CLIENTID + 1) : 0, plen;
	uint8_t verifier[32];
	bool ok;

	if(clen > CAP_CLIENTID) return MOSQ_ERR_AUTH;
	if(a->client_id_len > 0 && (a->client_id_len != clen || memcmp(a->client_id, cid, clen) != 0)){
		return MOSQ_ERR_AUTH;
	}
	if(claim_conflicts(a, cid ? cid : "", clen)){
		if(log_due(&g.last_claim_log)){
			char eu[ESCAPED], ec[ESCAPED];
			rc_escape(username, a->username_len, eu, sizeof(eu));
			rc_escape(cid, clen, ec, sizeof(ec));
			mosquitto_log_printf(MOSQ_LOG_NOTICE, "registry_plugin: refused %s: client id %s is held by another "
					"account (logged at most once a minute)", eu, ec);
		}
		return MOSQ_ERR_AUTH;
	}
	plen = password ? strlen(password) : 0;
	rc_verifier(g.secret, username, a->username_len, password, plen, verifier);
	ok = rc_ct_equal(verifier, a->verifier, 32);
	explicit_bzero(verifier, sizeof(verifier));
	if(!ok){
		if(!(a->flags & (RC_ADMIN | RC_SERVICE)) && unlocked()){
			report_attempt(client, 1, username, password);
		}
		return MOSQ_ERR_AUTH;
	}
	if(!certificate_matches(a, client)){
		/* The right password with another certificate (or none): a device presenting a new one. */
		if(!(a->flags & (RC_ADMIN | RC_SERVICE)) && unlocked()){
			report_attempt(client, 2, username, password);
		}
		return MOSQ_ERR_AUTH;
	}
	if(a->flags & RC_DISABLED) return MOSQ_ERR_AUTH;
	session_begin(client, a, cid ? cid : "", clen);
	return MOSQ_ERR_SUCCESS;
}

static int unknown_name(struct mosquitto *client, const char *username, const char *password)
{
	if(unlocked()){
		report_attempt(client, 0, username, password);
	}else{
		knock_count(username);
	}
	return MOSQ_ERR_AUTH;
}

static int basic_auth_main(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	struct instance *inst = userdata;
	const struct rc_account *a;
	size_t ulen;

	(void)event;
	if(ed->username == NULL || ed->username[0] == '\0') return MOSQ_ERR_PLUGIN_DEFER;
	ulen = strnlen(ed->username, CAP_USERNAME + 1);
	a = ulen <= CAP_USERNAME ? rc_table_find(&g.state.table, ed->username, ulen) : NULL;
	if(a) return auth_account(a, ed->client, ed->username, ed->password);
	if(inst->part == PART_FIRST) return MOSQ_ERR_PLUGIN_DEFER;
	return unknown_name(ed->client, ed->username, ed->password);
}

/* Part last: a distinct function (Mosquitto refuses one function registered twice). */
static int basic_auth_last(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;

	(void)event;
	(void)userdata;
	if(ed->username == NULL || ed->username[0] == '\0') return MOSQ_ERR_PLUGIN_DEFER;
	return unknown_name(ed->client, ed->username, ed->password);
}

static const struct rc_account *client_account(const struct mosquitto *client)
{
	const char *username = mosquitto_client_username(client);
	size_t ulen;

	if(username == NULL || username[0] == '\0') return NULL;
	ulen = strnlen(username, CAP_USERNAME + 1);
	return ulen <= CAP_USERNAME ? rc_table_find(&g.state.table, username, ulen) : NULL;
}

static int acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const struct rc_account *a;
	const char *topic = ed->topic;
	size_t tlen;
	uint8_t need;
	bool privileged;
	uint16_t i;

	(void)event;
	(void)userdata;
	a = client_account(ed->client);
	if(a == NULL) return MOSQ_ERR_PLUGIN_DEFER;
	if(a->flags & RC_DISABLED) return MOSQ_ERR_ACL_DENIED;
	if(ed->access == MOSQ_ACL_UNSUBSCRIBE) return MOSQ_ERR_SUCCESS;
	if(topic == NULL) return MOSQ_ERR_ACL_DENIED;
	if(strcmp(topic, CONTROL_TOPIC) == 0){
		return (ed->access == MOSQ_ACL_WRITE && (a->flags & RC_SERVICE)) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
	}
	if(strcmp(topic, RESPONSE_TOPIC) == 0){
		return ((ed->access == MOSQ_ACL_READ || ed->access == MOSQ_ACL_SUBSCRIBE) && (a->flags & RC_SERVICE))
			? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
	}
	switch(ed->access){
		case MOSQ_ACL_WRITE: need = RC_WRITE; break;
		case MOSQ_ACL_READ:
		case MOSQ_ACL_SUBSCRIBE: need = RC_READ; break;
		default: return MOSQ_ERR_ACL_DENIED;
	}
	tlen = strlen(topic);
	privileged = topic[0] == '$';
	if(privileged && !(a->flags & (RC_ADMIN | RC_SERVICE))) return MOSQ_ERR_ACL_DENIED;
	for(i = 0; i < a->n_acl; i++){
		const struct rc_acl *acl = &a->acls[i];
		if(!(acl->access & need)) continue;
		if(privileged && acl->pattern[0] != '$') continue;
		if(ed->access == MOSQ_ACL_SUBSCRIBE ? rc_covers(acl->pattern, acl->len, topic, tlen)
				: rc_matches(acl->pattern, acl->len, topic, tlen)){
			return MOSQ_ERR_SUCCESS;
		}
	}
	return MOSQ_ERR_ACL_DENIED;
}

static int control_callback(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_control *ed = event_data;
	const struct rc_account *sender;
	struct rc_answer answer;
	uint8_t out[RC_ANSWER_LEN];
	const char *why = "?";
	unsigned kicked = 0;
	int rc;

	(void)event;
	(void)userdata;
	sender = client_account(ed->client);
	if(sender == NULL || !(sender->flags & RC_SERVICE) || (sender->flags & RC_DISABLED)){
		return MOSQ_ERR_SUCCESS; /* not the service's: ignored (the ACL check refused it already) */
	}
	rc = rc_control(&g.state, ed->payload, ed->payloadlen, kick_username, &kicked, &answer, &why);
	if(kicked > KICKS_LOGGED){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "registry_plugin: ... and the sessions of %u more accounts",
				kicked - KICKS_LOGGED);
	}
	if(rc != RC_OK && log_due(&g.last_malformed_log)){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "registry_plugin: control message refused (%s); state kept "
				"(logged at most once a minute)", why);
	}
	rc_answer_encode(&answer, out);
	mosquitto_broker_publish_copy(NULL, RESPONSE_TOPIC, (int)sizeof(out), out, 0, false, NULL);
	return MOSQ_ERR_SUCCESS;
}

static int disconnect_callback(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;

	(void)event;
	(void)userdata;
	session_end(ed->client);
	return MOSQ_ERR_SUCCESS;
}

static int tick_callback(int event, void *event_data, void *userdata)
{
	int64_t now = monotonic_ms();

	(void)event;
	(void)event_data;
	(void)userdata;
	if(g.fd < 0) return MOSQ_ERR_SUCCESS;
	if(g.pending_head) pending_flush();
	if(g.knock_total > 0 && now - g.first_knock_ms >= KNOCK_INTERVAL_MS){
		knocks_send();
	}
	if((g.presence_head || g.reset_pending) && now - g.last_presence_ms >= PRESENCE_INTERVAL_MS){
		presence_send();
		g.last_presence_ms = now;
	}
	return MOSQ_ERR_SUCCESS;
}

/* ---- init and cleanup ---- */

static bool read_file(const char *path, uint8_t **data, size_t *len, int *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	size_t got = 0;
	ssize_t n;

	*data = NULL;
	if(fd < 0){ *err = errno; return false; }
	if(fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)){
		*err = EINVAL;
		close(fd);
		return false;
	}
	*data = malloc((size_t)st.st_size + 1);
	if(*data == NULL){ *err = ENOMEM; close(fd); return false; }
	while(got < (size_t)st.st_size){
		n = read(fd, *data + got, (size_t)st.st_size - got);
		if(n < 0 && errno == EINTR) continue;
		if(n <= 0) break;
		got += (size_t)n;
	}
	close(fd);
	*len = got;
	return true;
}

static bool load_secret(const char *path)
{
	uint8_t *data;
	size_t len = 0;
	int err = 0;
	bool ok;

	if(path == NULL || path[0] == '\0'){
		mosquitto_log_printf(MOSQ_LOG_ERR, "registry_plugin: plugin_opt_secret_file is required");
		return false;
	}
	if(!read_file(path, &data, &len, &err)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "registry_plugin: cannot read the secret file %s (%s)", path, strerror(err));
		return false;
	}
	ok = rc_secret_parse((const char *)data, len, g.secret);
	explicit_bzero(data, len);
	free(data);
	if(!ok){
		mosquitto_log_printf(MOSQ_LOG_ERR, "registry_plugin: the secret file %s does not hold 64 hex digits", path);
	}
	return ok;
}

static void load_snapshot(const char *path)
{
	uint8_t *data;
	size_t len = 0;
	int err = 0, rc;
	const char *why = "?";
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if(path == NULL || path[0] == '\0'){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "registry_plugin: plugin_opt_snapshot not set; starting with no accounts");
		rc_table_init(&g.state.table, 0, g.seed);
		return;
	}
	if(!read_file(path, &data, &len, &err)){
		rc_table_init(&g.state.table, 0, g.seed);
		if(err == ENOENT){
			mosquitto_log_printf(MOSQ_LOG_NOTICE, "registry_plugin: snapshot %s missing; starting with no accounts", path);
		}else{
			mosquitto_log_printf(MOSQ_LOG_WARNING, "registry_plugin: cannot read snapshot %s (%s); starting with no accounts",
					path, strerror(err));
		}
		return;
	}
	rc = rc_snapshot_load(&g.state, data, len, g.seed, &why);
	free(data);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if(rc != RC_OK){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "registry_plugin: snapshot %s refused (%s); starting with no accounts",
				path, why);
		return;
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "registry_plugin: loaded %zu accounts (state seq %" PRIu64 ") from %s in %.1f ms",
			g.state.table.count, g.state.seq, path,
			(double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
}

static void open_socket(const char *path)
{
	size_t path_len = path ? strlen(path) : 0;

	if(path_len == 0){
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				"registry_plugin: plugin_opt_socket not set; unknown clients are refused but not reported");
	}else if(path[0] != '/'){
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				"registry_plugin: plugin_opt_socket must be an absolute path (got %s); unknown clients are refused but not reported",
				path);
	}else if(path_len >= sizeof(g.addr.sun_path)){
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				"registry_plugin: plugin_opt_socket is longer than %u bytes; unknown clients are refused but not reported",
				(unsigned)(sizeof(g.addr.sun_path) - 1));
	}else{
		g.addr.sun_family = AF_UNIX;
		memcpy(g.addr.sun_path, path, path_len + 1);
		g.addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len + 1);
		/* Unbound and unconnected: each sendto finds whoever holds the path now. */
		g.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if(g.fd < 0){
			mosquitto_log_printf(MOSQ_LOG_WARNING,
					"registry_plugin: cannot create socket (%s); unknown clients are refused but not reported",
					strerror(errno));
		}
	}
}

static char *dup_opt(const char *v)
{
	return v ? strdup(v) : NULL;
}

static bool same_opt(const char *a, const char *b)
{
	return b == NULL || (a != NULL && strcmp(a, b) == 0);
}

static bool state_init(const char *secret, const char *snapshot, const char *sock)
{
	if(getrandom(&g.seed, sizeof(g.seed), GRND_NONBLOCK) != (ssize_t)sizeof(g.seed)){
		g.seed = (uint64_t)realtime_ms() ^ ((uint64_t)getpid() << 32);
	}
	if(!load_secret(secret)) return false;
	g.secret_path = dup_opt(secret);
	g.snapshot_path = dup_opt(snapshot);
	g.socket_path = dup_opt(sock);
	load_snapshot(snapshot);
	g.fd = -1;
	open_socket(sock);
	g.reset_pending = true;
	g.last_presence_ms = monotonic_ms() - 1000;
	return true;
}

static void state_free(void)
{
	struct presence *p;
	size_t i;
	struct session *s;
	struct claim *c;

	/* Sessions first: a claim already out of the table lives as long as a session points to it. */
	for(i = 0; i < g.n_session_buckets; i++){
		while((s = g.sessions[i]) != NULL){
			g.sessions[i] = s->next;
			c = s->claim;
			if(--c->refs == 0 && !c->in_table) free(c);
			free(s);
		}
	}
	for(i = 0; i < g.n_claim_buckets; i++){
		while((c = g.claims[i]) != NULL){
			g.claims[i] = c->next;
			free(c);
		}
	}
	free(g.sessions);
	free(g.claims);
	while((p = g.presence_head) != NULL){
		g.presence_head = p->next;
		free(p);
	}
	knocks_clear();
	while(g.pending_head) pending_pop();
	rc_state_free(&g.state);
	if(g.fd >= 0) close(g.fd);
	free(g.secret_path);
	free(g.snapshot_path);
	free(g.socket_path);
	explicit_bzero(g.secret, sizeof(g.secret));
	memset(&g, 0, sizeof(g));
	g.fd = -1;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;

	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

static void unregister_all(struct instance *inst)
{
	if(inst->part == PART_LAST){
		mosquitto_callback_unregister(inst->id, MOSQ_EVT_BASIC_AUTH, basic_auth_last, NULL);
	}else{
		mosquitto_callback_unregister(inst->id, MOSQ_EVT_BASIC_AUTH, basic_auth_main, NULL);
		mosquitto_callback_unregister(inst->id, MOSQ_EVT_ACL_CHECK, acl_check, NULL);
		mosquitto_callback_unregister(inst->id, MOSQ_EVT_CONTROL, control_callback, CONTROL_TOPIC);
		mosquitto_callback_unregister(inst->id, MOSQ_EVT_DISCONNECT, disconnect_callback, NULL);
	}
	if(inst->owns_tick){
		mosquitto_callback_unregister(inst->id, MOSQ_EVT_TICK, tick_callback, NULL);
		inst->owns_tick = false;
		g.tick_registered = false;
	}
}

static void release(struct instance *inst)
{
	g.parts &= ~(1u << inst->part);
	free(inst);
	if(--g.refs == 0) state_free();
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	const char *secret = NULL, *snapshot = NULL, *sock = NULL, *part = "all";
	struct instance *inst;
	int i, rc = MOSQ_ERR_SUCCESS;

	for(i = 0; i < option_count; i++){
		if(options[i].key == NULL) continue;
		if(strcmp(options[i].key, "secret_file") == 0) secret = options[i].value;
		else if(strcmp(options[i].key, "snapshot") == 0) snapshot = options[i].value;
		else if(strcmp(options[i].key, "socket") == 0) sock = options[i].value;
		else if(strcmp(options[i].key, "part") == 0) part = options[i].value ? options[i].value : "";
	}
	inst = calloc(1, sizeof(*inst));
	if(inst == NULL) return MOSQ_ERR_NOMEM;
	inst->id = identifier;
	for(i = 0; i < 3 && strcmp(part, part_names[i]) != 0; i++);
	if(i == 3){
		mosquitto_log_printf(MOSQ_LOG_ERR, "registry_plugin: plugin_opt_part must be all, first or last (got %s)", part);
		free(inst);
		return MOSQ_ERR_INVAL;
	}
	inst->part = (enum part)i;
	if((g.parts & (1u << inst->part)) || (g.parts && inst->part == PART_ALL) || (g.parts & (1u << PART_ALL))){
		mosquitto_log_printf(MOSQ_LOG_ERR, "registry_plugin: part %s cannot be loaded with the parts already loaded "
				"(one 'all', or one 'first' and one 'last')", part);
		free(inst);
		return MOSQ_ERR_INVAL;
	}
	if(g.refs == 0){
		if(!state_init(secret, snapshot, sock)){
			state_free();
			free(inst);
			return MOSQ_ERR_INVAL;
		}
	}else if(!same_opt(g.secret_path, secret) || !same_opt(g.snapshot_path, snapshot) || !same_opt(g.socket_path, sock)){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "registry_plugin: part %s: secret_file, snapshot and socket are taken from "
				"the first instance loaded; this instance's differ and are ignored", part);
	}
	g.refs++;
	g.parts |= 1u << inst->part;

	if(inst->part == PART_LAST){
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, basic_auth_last, NULL, inst);
	}else{
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, basic_auth_main, NULL, inst);
		if(rc == MOSQ_ERR_SUCCESS) rc = mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, acl_check, NULL, inst);
		if(rc == MOSQ_ERR_SUCCESS) rc = mosquitto_callback_register(identifier, MOSQ_EVT_CONTROL, control_callback,
				CONTROL_TOPIC, inst);
		if(rc == MOSQ_ERR_SUCCESS) rc = mosquitto_callback_register(identifier, MOSQ_EVT_DISCONNECT,
				disconnect_callback, NULL, inst);
	}
	if(rc == MOSQ_ERR_SUCCESS && !g.tick_registered){
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_TICK, tick_callback, NULL, inst);
		if(rc == MOSQ_ERR_SUCCESS) inst->owns_tick = g.tick_registered = true;
	}
	if(rc != MOSQ_ERR_SUCCESS){
		mosquitto_log_printf(MOSQ_LOG_ERR, "registry_plugin: cannot register the callbacks of part %s (%s)",
				part, mosquitto_strerror(rc));
		unregister_all(inst);
		release(inst);
		return rc;
	}
	*userdata = inst;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	struct instance *inst = userdata;

	(void)options;
	(void)option_count;
	if(inst == NULL) return MOSQ_ERR_SUCCESS;
	unregister_all(inst);
	release(inst);
	return MOSQ_ERR_SUCCESS;
}
