"""The programme's XLSForm templates and the script that builds them."""
