%% A session belongs to its login (docs/adr/0016-sessions-belong-to-their-logins.md).
%%
%% RabbitMQ 3.10's MQTT plugin registers a client id cluster-wide, closing the connection
%% that held it, as soon as the login succeeds: the permissions of the session queues are
%% checked only afterwards. A login using another login's client id was refused its
%% session but still closed the owner's connection, once per attempt. This authorisation
%% backend refuses such a login at the virtual-host check, which runs inside the login and
%% sees the MQTT client id, so the owner is never touched: a login may use the client id
%% `<login>` or any id that starts with `<login>:` (the rule of tracker_contract/ids.py and
%% of the Mosquitto plugin, mqtt/plugin/session_owner.c).
%%
%% It only ever narrows: it is listed after the internal backend in each node's
%% authorisation chain (advanced.config), every backend of which must allow, and it allows
%% every resource and topic (the internal backend's permissions decide those) and every
%% connection that is not MQTT (no client id).
%%
%% Built by deploy/rabbitmq/plugin/build.sh; enabled as the plugin rabbitmq_session_owner.
-module(rabbit_auth_backend_session_owner).
%% The callbacks of rabbit_authz_backend (not declared as -behaviour: building then needs
%% no RabbitMQ sources).

-export([user_login_authorization/2, check_vhost_access/3, check_resource_access/4,
         check_topic_access/4, state_can_expire/0, update_state/2, client_id_allowed/2]).

%% rabbit_common/include/rabbit.hrl's record, which is all this module needs of it.
-record(auth_user, {username, tags, impl}).

user_login_authorization(_Username, _AuthProps) ->
    {ok, none}.

check_vhost_access(#auth_user{username = Login}, _VHost, #{<<"client_id">> := ClientId}) ->
    case client_id_allowed(Login, ClientId) of
        true ->
            true;
        false ->
            logger:notice("session_owner: refused login ~ts with client id ~ts (a login's "
                          "client ids are <login> or <login>:...)", [Login, ClientId]),
            false
    end;
check_vhost_access(_AuthUser, _VHost, _NoClientId) ->
    true.

check_resource_access(_AuthUser, _Resource, _Permission, _Context) ->
    true.

check_topic_access(_AuthUser, _Resource, _Permission, _Context) ->
    true.

state_can_expire() ->
    false.

update_state(AuthUser, _NewState) ->
    {ok, AuthUser}.

%% Whether Login may connect as ClientId: ClientId is Login, or Login followed by ':'.
client_id_allowed(Login, ClientId) when is_binary(Login), is_binary(ClientId),
                                         byte_size(Login) > 0 ->
    Size = byte_size(Login),
    case ClientId of
        Login -> true;
        <<Login:Size/binary, $:, _/binary>> -> true;
        _ -> false
    end;
client_id_allowed(_Login, _ClientId) ->
    false.
