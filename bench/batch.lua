-- wrk: POST batches of BENCH_BATCH events (default 100) as one JSON array per request.
local size = tonumber(os.getenv("BENCH_BATCH") or "100")
local items = {}
for i = 1, size do
    items[i] = '{"data":"benchmark-event-payload"}'
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = "[" .. table.concat(items, ",") .. "]"
