#!/bin/sh
# Writes the Caddyfile from the environment (checked by `make up`: scripts/prepare.py) and runs Caddy.
#   HUB_DOMAIN  the hub's name
#   CADDY_TLS   acme | internal | files (the admin's certificate: /run/tls/cert.pem, /run/tls/key.pem)
#   ACME_EMAIL  optional, for ACME
#   UPSTREAM    the proxy (default proxy:8000)
set -eu
: "${HUB_DOMAIN:?HUB_DOMAIN is not set}"
case "${CADDY_TLS:-acme}" in
  acme) tls="" ;;
  internal) tls="tls internal" ;;
  files) tls="tls /run/tls/cert.pem /run/tls/key.pem" ;;
  *) echo "CADDY_TLS=$CADDY_TLS: use acme, internal or files" >&2; exit 2 ;;
esac
email=""
[ -n "${ACME_EMAIL:-}" ] && email="email $ACME_EMAIL"
# Users' servers on hosts of their own (USER_SUBDOMAINS, checked by `make up`: the internal CA or
# a certificate that names the wildcard): one site for the hub's name and every name under it.
sites="$HUB_DOMAIN"
[ "${CADDY_SUBDOMAINS:-}" = 1 ] && sites="$HUB_DOMAIN, *.$HUB_DOMAIN"
cat > /config/Caddyfile <<CADDY
{
	admin off
	skip_install_trust
	# HTTP/1.1 and 2 over TCP: compose publishes no UDP port for HTTP/3
	servers {
		protocols h1 h2
	}
	$email
}
$sites {
	$tls
	# HSTS: browsers use HTTPS only for this name for a year (HTTP is redirected by Caddy).
	header Strict-Transport-Security "max-age=31536000"
	# Websockets (kernels, terminals) pass through as they are.
	reverse_proxy ${UPSTREAM:-proxy:8000}
}
CADDY
exec caddy run --config /config/Caddyfile --adapter caddyfile
