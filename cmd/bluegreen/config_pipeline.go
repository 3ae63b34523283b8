package main

// checkClientFaults validates the data plane's client-fault settings.
func (cfg *Config) checkClientFaults(bad func(name, value, expected string)) {
	if cfg.ClientBodyTimeout <= 0 {
		bad("CLIENT_BODY_TIMEOUT", cfg.ClientBodyTimeout.String(), "expected a positive duration such as 60s")
	}
	if cfg.ClientSendTimeout <= 0 {
		bad("CLIENT_SEND_TIMEOUT", cfg.ClientSendTimeout.String(), "expected a positive duration such as 60s")
	}
}
