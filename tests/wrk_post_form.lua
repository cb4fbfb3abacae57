-- wrk sends each request as a POST of a small urlencoded form (tests/test_webservers.py)
wrk.method = "POST"
wrk.body = "name=visitor&message=hello"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
