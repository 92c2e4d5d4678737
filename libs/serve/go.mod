module github.com/gatehouse/gatehouse/libs/serve

go 1.26
