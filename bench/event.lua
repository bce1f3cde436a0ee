-- wrk: POST one event as a JSON object per request, as a client with a login sends it
-- (with TRACKER_HTTP_AUTH the tracker takes events only as POSTs with a JSON or NDJSON body).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"data":"benchmark-event-payload"}'
