-- domain_info: the policy text, tool schemas and rules of one built domain
SELECT wiki, tools, rules FROM taubench_domains WHERE domain = $domain
