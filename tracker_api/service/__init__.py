"""The core service: the one place an event is validated and published, the account
cache, the rules of account management, the rate limit, the broker connection and its
client ids."""
