package main

import (
	"encoding/json"
	"os"

	"github.com/stagefsm/stagefsm/internal/scalereport"
)

func readScale(path string) (*scalereport.Report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s scalereport.Report
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, err
	}
	return &s, nil
}
