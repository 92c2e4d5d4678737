package gatehouse.main

default decision := {"decision": "not_applicable", "reason_code": "no_applicable_policy"}

decision := {"decision": "allow", "reason_code": "allowed"} if {
	http.send({"method": "GET", "url": "http://example.invalid"}).status_code == 200
}
