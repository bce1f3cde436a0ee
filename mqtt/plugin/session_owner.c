/*
 * A session belongs to its login (docs/adr/0016-sessions-belong-to-their-logins.md).
 *
 * Mosquitto ties topics to logins (the ACL) but nothing ties a client id to a login: any
 * login that connects with another client's id resumes that client's persistent session
 * and empties it of everything it may not read. This plugin refuses such a CONNECT before
 * the broker looks at the session: a login may use the client id `<login>` or any id
 * that starts with `<login>:`; anything else is answered "not authorised" and the owner's
 * connection, subscriptions and queued messages are untouched (Mosquitto takes a session
 * over only after authentication succeeded).
 *
 * The rule is the one tracker_api's ids.client_id_allowed() states in Python. When the
 * ':' is never part of a login (account ids and role names have none), so one login's ids
 * can never be another's. When the client id follows the rule, the plugin defers, so the password file still decides whether the
 * password is right. A client without a login (only where allow_anonymous is on: the test
 * fixtures) is left to that setting.
 *
 * Built by mqtt/plugin/build.sh; loaded with `plugin /path/to/session_owner.so`.
 */

#include <stddef.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

static mosquitto_plugin_id_t *plugin_id = NULL;

static int client_id_allowed(const char *login, const char *client_id)
{
	size_t length = strlen(login);

	if(length == 0 || strncmp(client_id, login, length) != 0){
		return 0;
	}
	return client_id[length] == '\0' || client_id[length] == ':';
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *auth = event_data;
	const char *client_id = mosquitto_client_id(auth->client);

	(void)event;
	(void)userdata;
	if(auth->username == NULL){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	if(client_id == NULL || !client_id_allowed(auth->username, client_id)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"session_owner: refused login %s with client id %s (a login's client ids are "
				"<login> or <login>:...)", auth->username, client_id ? client_id : "(none)");
		return MOSQ_ERR_AUTH;
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	plugin_id = identifier;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
}
