/*
 * client-registry: Mosquitto plugin that reports unknown devices to the registry.
 *
 * Loaded after the stock dynamic-security plugin, which answers every username
 * it knows and defers the rest, so MOSQ_EVT_BASIC_AUTH only reaches us for
 * usernames the broker does not know (or known ones that sent no password:
 * dynamic-security defers those too). Each such attempt becomes one datagram
 * to the registry (format: plugin_socket_format.md) and a "not authorised"
 * answer; admitting the device is the registry's job, done later through
 * dynamic-security, never here.
 *
 * Option: plugin_opt_socket /abs/path  (the registry's AF_UNIX SOCK_DGRAM socket)
 *
 * The broker is single-threaded and every client waits on this callback, so it
 * must never block: one non-blocking socket, one sendto per attempt, and any
 * failure drops the datagram (the device simply retries later).
 *
 * Build: cc -shared -fPIC -O2 -Wall -Wextra -o registry_plugin.so registry_plugin.c
 * (mosquitto_* symbols resolve from the broker at load time.)
 */

/* SOCK_NONBLOCK, SOCK_CLOEXEC and explicit_bzero, even under a strict -std=. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define MAGIC "CRK1"

/* Caps keep the datagram bounded (well under any AF_UNIX limit) and keep
 * junk out of the registry; an over-cap attempt is refused without a report. */
#define CAP_USERNAME 1024
#define CAP_PASSWORD 4096
#define CAP_CLIENTID 1024
#define CAP_ADDRESS  1024
#define DATAGRAM_MAX (4 + 1 + 4 * 2 + CAP_USERNAME + CAP_PASSWORD + CAP_CLIENTID + CAP_ADDRESS)

/* A flood of failing sends must not become a flood of log lines. */
#define LOG_INTERVAL_SECONDS 60
#define ERRNO_SLOTS 256

struct registry_plugin {
	mosquitto_plugin_id_t *identifier;
	int fd;                       /* -1: reporting disabled, still refuse */
	struct sockaddr_un addr;
	socklen_t addr_len;
	time_t last_logged[ERRNO_SLOTS];
};

static time_t monotonic_seconds(void)
{
	struct timespec ts;

	/* Monotonic so a wall-clock jump cannot silence or unleash the log. */
	if(clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
	return ts.tv_sec;
}

static void log_send_error(struct registry_plugin *plugin, int err)
{
	int slot = (err > 0 && err < ERRNO_SLOTS) ? err : 0;
	/* Shifted by one interval so that 0 in last_logged can mean "never",
	 * even in the first minute after boot. */
	time_t now = monotonic_seconds() + LOG_INTERVAL_SECONDS;

	if(plugin->last_logged[slot] != 0 && now - plugin->last_logged[slot] < LOG_INTERVAL_SECONDS){
		return;
	}
	plugin->last_logged[slot] = now;
	mosquitto_log_printf(MOSQ_LOG_WARNING,
			"registry_plugin: cannot reach the registry at %s (%s); dropping reports "
			"(logged at most once a minute per error)",
			plugin->addr.sun_path, strerror(err));
}

static int basic_auth_callback(int event, void *event_data, void *userdata)
{
	static const size_t caps[4] = {CAP_USERNAME, CAP_PASSWORD, CAP_CLIENTID, CAP_ADDRESS};
	struct mosquitto_evt_basic_auth *ed = event_data;
	struct registry_plugin *plugin = userdata;
	unsigned char datagram[DATAGRAM_MAX];
	unsigned char *pos = datagram;
	const char *fields[4];
	size_t lengths[4];
	int i;

	(void)event;

	/* No username: not a device asking to register; leave it to allow_anonymous. */
	if(ed->username == NULL || ed->username[0] == '\0'){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	if(plugin->fd < 0){
		return MOSQ_ERR_AUTH;
	}

	/* A NULL password (none sent, or zero-length) is reported as empty. */
	fields[0] = ed->username;
	fields[1] = ed->password;
	fields[2] = mosquitto_client_id(ed->client);
	fields[3] = mosquitto_client_address(ed->client);
	for(i = 0; i < 4; i++){
		/* strnlen bounds the scan: a 64 KiB hostile string costs at most cap+1 bytes. */
		lengths[i] = fields[i] ? strnlen(fields[i], caps[i] + 1) : 0;
		if(lengths[i] > caps[i]) return MOSQ_ERR_AUTH;
	}

	memcpy(pos, MAGIC, 4);
	pos += 4;
	*pos++ = (unsigned char)(mosquitto_client_protocol_version(ed->client) & 0xff);
	for(i = 0; i < 4; i++){
		*pos++ = (unsigned char)(lengths[i] >> 8);
		*pos++ = (unsigned char)(lengths[i] & 0xff);
		if(lengths[i]) memcpy(pos, fields[i], lengths[i]);
		pos += lengths[i];
	}

	if(sendto(plugin->fd, datagram, (size_t)(pos - datagram), MSG_DONTWAIT | MSG_NOSIGNAL,
				(const struct sockaddr *)&plugin->addr, plugin->addr_len) < 0){
		log_send_error(plugin, errno);
	}
	/* Keep stale passwords out of the broker's stack (and so out of core dumps). */
	explicit_bzero(datagram, (size_t)(pos - datagram));
	return MOSQ_ERR_AUTH;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;

	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	struct registry_plugin *plugin;
	const char *path = NULL;
	size_t path_len;
	int i;

	plugin = calloc(1, sizeof(*plugin));
	if(plugin == NULL) return MOSQ_ERR_NOMEM;
	plugin->identifier = identifier;
	plugin->fd = -1;

	for(i = 0; i < option_count; i++){
		if(options[i].key && strcmp(options[i].key, "socket") == 0){
			path = options[i].value;
		}
	}

	/* A bad or missing option must not stop the broker: unknown devices are
	 * still refused, they just are not reported. */
	path_len = path ? strlen(path) : 0;
	if(path_len == 0){
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				"registry_plugin: plugin_opt_socket not set; unknown clients are refused but not reported");
	}else if(path[0] != '/'){
		/* The broker's working directory is not ours to rely on. */
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				"registry_plugin: plugin_opt_socket must be an absolute path (got %s); unknown clients are refused but not reported",
				path);
	}else if(path_len >= sizeof(plugin->addr.sun_path)){
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				"registry_plugin: plugin_opt_socket is longer than %u bytes; unknown clients are refused but not reported",
				(unsigned)(sizeof(plugin->addr.sun_path) - 1));
	}else{
		plugin->addr.sun_family = AF_UNIX;
		memcpy(plugin->addr.sun_path, path, path_len + 1);
		plugin->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len + 1);
		/* Unbound and unconnected: the registry may start, stop or be replaced
		 * at any time, and each sendto finds whoever holds the path now. */
		plugin->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if(plugin->fd < 0){
			mosquitto_log_printf(MOSQ_LOG_WARNING,
					"registry_plugin: cannot create socket (%s); unknown clients are refused but not reported",
					strerror(errno));
		}
	}

	if(mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, basic_auth_callback, NULL, plugin) != MOSQ_ERR_SUCCESS){
		if(plugin->fd >= 0) close(plugin->fd);
		free(plugin);
		return MOSQ_ERR_UNKNOWN;
	}
	*userdata = plugin;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	struct registry_plugin *plugin = userdata;

	(void)options;
	(void)option_count;

	if(plugin == NULL) return MOSQ_ERR_SUCCESS;
	mosquitto_callback_unregister(plugin->identifier, MOSQ_EVT_BASIC_AUTH, basic_auth_callback, NULL);
	if(plugin->fd >= 0) close(plugin->fd);
	free(plugin);
	return MOSQ_ERR_SUCCESS;
}
