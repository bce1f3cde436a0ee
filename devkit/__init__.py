"""What the tools of the checkout share: tests, bench and scripts import it from here.

Free ports (``net``), waiting with a deadline (``waiting``), a real Mosquitto (``broker``),
a throwaway PostgreSQL (``postgres``), HAProxy in front of trackers (``loadbalancer``), a
paced HTTP load (``paced_load``), paho clients (``mqtt_client``), mqtt-tail as a process
and a QoS-1 publisher (``tail``), Prometheus samples (``metrics``).

Not shipped: the wheel holds tracker_contract, tracker_api and subscriber, none of which
imports this package (``make lint`` checks it). It is importable from the repository's
root, where pytest, ``python -m bench`` and ``python -m scripts.…`` run.
"""
