-- wrk at a fixed offered rate: each connection waits WRK_DELAY_MS before its next
-- request. Prints every percentile we need from wrk's full latency histogram.
local pause = tonumber(os.getenv("WRK_DELAY_MS") or "0")

function delay()
    return pause
end

function done(summary, latency, requests)
    io.write(string.format("PACED %d %d %d %d %d %d %d\n",
        summary.requests, summary.duration, summary.errors.status,
        latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
